//! Import of MySQL-MMM 2.2.1 configurations (filled in below).
