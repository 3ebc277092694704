//! control-api (placeholder: see its issue).
