//! Limits shared by every llm-bridge instance, in Redis: requests and tokens per minute,
//! requests in flight and token/cost budgets per managed key, so that N instances behind a
//! load balancer allow what one would.
//!
//! Each key's state lives in six Redis keys under one hash tag (`llmb:{<key id>}:…`, so a
//! Redis Cluster keeps them on one shard), changed only by one Lua script (`limits.lua`),
//! loaded once and called by its hash, with Redis's clock. Admitting a request is one round
//! trip on the request path; settling and releasing go to a background thread, off it.
//! Requests hold a lease (15 minutes) so that an instance that dies mid-request gives its
//! places and reservations back. Budget counters missing (Redis restarted) are seeded
//! again from the usage records before the key's next request.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod backend;

pub use backend::{RedisLimits, SpendSource, Spent};
