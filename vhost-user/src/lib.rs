//! vhost-user (placeholder: see its issue).
