//! The reference broker (design brief §6.3): a real Unix-socket broker for tests and demos.
