#!/usr/bin/env bash
# Runs the seeded power-loss simulation (tests/wal_faults.rs) over many seeds.
# Usage: scripts/sim.sh [SEEDS (default 500)] [FIRST_SEED (default 1)]
# Each seed runs several crash/reopen cycles on the simulated disk with torn unsynced sectors;
# the run fails at the first seed that loses an acknowledged event or replays out of order.
# PROCMOND_WAL_SIM_DEBUG=1 prints a summary of what each reopen found; PROCMOND_WAL_SIM_ONLY=1
# skips the fixed regression seeds (to rerun one seed: scripts/sim.sh 1 SEED).
set -euo pipefail
cd "$(dirname "$0")/.."
seeds="${1:-500}"
first="${2:-1}"
echo "simulating seeds ${first}..$((first + seeds - 1))"
PROCMOND_WAL_SIM_SEEDS="$seeds" PROCMOND_WAL_SIM_FIRST_SEED="$first" \
  cargo test --release --test wal_faults -- --exact seeded_power_loss_simulation_never_loses_an_acknowledged_event --nocapture
echo "all ${seeds} seeds passed"
