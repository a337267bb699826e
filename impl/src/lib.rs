//! cachelock: the real protocol.
