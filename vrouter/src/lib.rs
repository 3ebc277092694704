//! vrouter (placeholder: see its issue).
