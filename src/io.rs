//! The narrow I/O layer (design brief §3): the only place that makes syscalls on WAL files.
