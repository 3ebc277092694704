//! bench (placeholder: see its issue).
