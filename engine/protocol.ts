/** The engine protocol, defined in engine/protocol/ (one file per area); this re-exports it. */
export * from './protocol/index.js';
