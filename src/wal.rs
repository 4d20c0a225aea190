//! The write-ahead log (design brief §4).
