//! The queue's Lua scripts: each settles one delivery, or moves entries between keys, atomically.

use crate::redis_client::LuaScript;

/// The consumer group every replica reads in.
pub(super) const GROUP: &str = "hookgate";
/// The field of a stream entry that holds its envelope.
pub(super) const FIELD: &str = "e";

/// Appends an envelope once per event: `KEYS[3]`, the event's marker, holds the entry id for `ARGV[4]`
/// ms. A sender's retry of an event already appended (its first answer was lost, or was a `503` because
/// replicas did not confirm in time) refreshes the marker, a write, so that a `WAIT` after it covers the
/// first append too, and appends nothing. When `ARGV[1]` (`maxlen`) is above 0, the append is refused at
/// that many undelivered entries (in the stream or waiting for a retry): an acknowledged event is never
/// trimmed away. 1 when appended, 2 when already there, 0 when full.
pub(super) const APPEND: &str = r"
if redis.call('PEXPIRE', KEYS[3], ARGV[4]) == 1 then return 2 end
local cap = tonumber(ARGV[1])
if cap > 0 and redis.call('XLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2]) >= cap then
  return 0
end
local id = redis.call('XADD', KEYS[1], '*', ARGV[2], ARGV[3])
redis.call('SET', KEYS[3], id, 'PX', ARGV[4])
return 1";

// The settling scripts move an entry only if their `XACK` acknowledged it: an entry taken over by another
// replica (`XAUTOCLAIM`, after a pause longer than `reclaim_after`) and settled there first is not put on
// the delayed set, or dead-lettered, a second time. 1 when settled here, 0 when it was settled elsewhere.

/// Delivered: acknowledge and delete.
pub(super) const ACK: &str = r"
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('XDEL', KEYS[1], ARGV[2])
return 1";

/// Failed with attempts left: onto the delayed set (`ARGV[3]` the due time, `ARGV[4]` the envelope).
pub(super) const RETRY: &str = r"
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1";

/// Failed for the last time: into the dead-letter stream (`ARGV[3]` the envelope with its last error).
pub(super) const BURY: &str = r"
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('XADD', KEYS[2], '*', 'e', ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1";

/// Unreadable: into the dead-letter stream with its fields exactly as they were (Redis copies the bytes,
/// so nothing is lost to a decoding step), under `unreadable_entry`, the id it had in the queue. An entry
/// with more values than one Lua call takes (none of hookgate's has more than two) keeps its first 7 990,
/// and says `truncated`.
pub(super) const BURY_RAW: &str = r"
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
local found = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if found[1] then
  local fields = {'unreadable_entry', ARGV[2]}
  for i, value in ipairs(found[1][2]) do
    if i > 7990 then
      fields[#fields + 1] = 'truncated'
      fields[#fields + 1] = tostring(#found[1][2])
      break
    end
    fields[#fields + 1] = value
  end
  redis.call('XADD', KEYS[2], '*', unpack(fields))
end
redis.call('XDEL', KEYS[1], ARGV[2])
return 1";

pub(super) const MOVE_DUE: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, member in ipairs(due) do
  redis.call('XADD', KEYS[2], '*', 'e', member)
  redis.call('ZREM', KEYS[1], member)
end
return #due";

pub(super) const STATS: &str = r"
local pending = 0
local summary = redis.pcall('XPENDING', KEYS[1], ARGV[1])
if type(summary) == 'table' and summary[1] then pending = summary[1] end
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
local first_event = false
if first[1] then first_event = first[1][2][2] end
local delayed = redis.call('ZRANGE', KEYS[2], 0, 0)
return {redis.call('XLEN', KEYS[1]), pending, redis.call('ZCARD', KEYS[2]), redis.call('XLEN', KEYS[3]),
        first_event, delayed[1] or false}";

pub(super) const REPLAY: &str = r"
if redis.call('XDEL', KEYS[1], ARGV[1]) == 1 then
  redis.call('XADD', KEYS[2], '*', 'e', ARGV[2])
  return 1
end
return 0";

/// The scripts, loaded once per queue.
pub(super) struct Scripts {
    pub(super) append: LuaScript,
    pub(super) ack: LuaScript,
    pub(super) retry: LuaScript,
    pub(super) bury: LuaScript,
    pub(super) bury_raw: LuaScript,
    pub(super) move_due: LuaScript,
    pub(super) replay: LuaScript,
    pub(super) stats: LuaScript,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Scripts {
            append: LuaScript::new(APPEND),
            ack: LuaScript::new(ACK),
            retry: LuaScript::new(RETRY),
            bury: LuaScript::new(BURY),
            bury_raw: LuaScript::new(BURY_RAW),
            move_due: LuaScript::new(MOVE_DUE),
            replay: LuaScript::new(REPLAY),
            stats: LuaScript::new(STATS),
        }
    }
}
