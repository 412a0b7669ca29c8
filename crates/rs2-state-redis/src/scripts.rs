//! The Lua scripts behind the server-held key lock. Each runs atomically on the server, so
//! taking a lock and reading the value, or writing and releasing, is one round trip (and
//! many keys' requests can share one).
//!
//! A lock key holds the holder's token while held. A write-and-release replaces the token with
//! a *commit mark* (`c:<token>`) that lives a few seconds: a later holder treats the mark as
//! free, and the same write sent again (its reply was lost to a dropped connection) finds the
//! mark and reports success without writing twice.

use std::sync::LazyLock;

use redis::Script;

/// KEYS: lock. ARGV: token. Deletes the lock if `token` holds it (or left its commit mark).
pub(crate) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] or cur == 'c:' .. ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
",
    )
});

/// The lock and write requests of one or many keys in one call (see `batch`), applied in
/// order. KEYS: the lock and value key of each request, in pairs. ARGV: five per request:
/// kind (`L` lock, `R` lock and read, `S` set, `D` delete, `K` keep: the last three write and
/// release), token, ms (a lock's lease; a write's TTL, 0 for none), value, commit-mark ms.
///
/// Returns two per request. A lock: `1, value-or-nil` when `token` now holds it (also when it
/// already did: the same request sent again), `0, ms-left` when another holder has it. A
/// write: `1, nil` when applied (now, or by an earlier send of the same write, whose commit
/// mark is found), `0, nil` when `token` no longer holds the lock (nothing written).
pub(crate) static BATCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local out = {}
for i = 1, #KEYS / 2 do
  local lock, key = KEYS[2 * i - 1], KEYS[2 * i]
  local a = 5 * i - 4
  local kind, token, ms, value, mark_ms = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  local cur = redis.call('GET', lock)
  if kind == 'L' or kind == 'R' then
    if cur == false or cur == token or string.sub(cur, 1, 2) == 'c:' then
      redis.call('SET', lock, token, 'PX', ms)
      out[2 * i - 1] = 1
      if kind == 'R' then out[2 * i] = redis.call('GET', key) else out[2 * i] = false end
    else
      out[2 * i - 1] = 0
      out[2 * i] = redis.call('PTTL', lock)
    end
  elseif cur == token then
    if kind == 'S' then
      if ms == '0' then redis.call('SET', key, value) else redis.call('SET', key, value, 'PX', ms) end
    elseif kind == 'D' then
      redis.call('DEL', key)
    end
    redis.call('SET', lock, 'c:' .. token, 'PX', mark_ms)
    out[2 * i - 1] = 1
    out[2 * i] = false
  else
    if cur == 'c:' .. token then out[2 * i - 1] = 1 else out[2 * i - 1] = 0 end
    out[2 * i] = false
  end
end
return out
",
    )
});
