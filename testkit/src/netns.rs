//! netns helpers (filled in by the issue that first needs them).
