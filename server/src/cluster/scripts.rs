//! The Lua scripts the cluster engine runs in Redis. Each runs as one
//! atomic step, which is what makes a topic's stream positions, its
//! kept history and its pub/sub order agree on every node.

/// Publishes to a topic.
///
/// KEYS: stream, epoch, position counter, the set of the topic's durable
/// subscriptions' queues. ARGV: an epoch to use if the
/// topic has none yet, how many messages to keep, `1` for an ephemeral
/// message (no position, not kept), the frame, the channel, the time in
/// ms, the history's age limit in ms (0: none).
///
/// The epoch is made once per topic and kept: every node gives positions
/// from the same counter under it, so `x-since` means the same on all.
/// A message that is not ephemeral is also added to the queue of each
/// durable subscription (kept on the topic's server), whose subscriber
/// reads it as a queue's consumer would, online or later.
/// Returns the position (0 for an ephemeral message).
pub(super) const PUBLISH: &str = r#"
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[2], epoch)
end
local pos = 0
if ARGV[3] ~= '1' then
  pos = redis.call('INCR', KEYS[3])
  local keep = tonumber(ARGV[2])
  if keep > 0 then
    redis.call('XADD', KEYS[1], 'MAXLEN', keep, '0-' .. pos, 'f', ARGV[4], 't', ARGV[6])
    local age = tonumber(ARGV[7])
    if age > 0 then
      redis.call('PEXPIRE', KEYS[1], age)
    end
  end
  for _, q in ipairs(redis.call('SMEMBERS', KEYS[4])) do
    local n = redis.call('INCR', 'stompbox:{' .. q .. '}:n')
    redis.call('INCR', 'stompbox:{' .. q .. '}:len')
    redis.call('XADD', 'stompbox:{' .. q .. '}:q', '0-' .. n, 'f', ARGV[4], 't', ARGV[6])
    redis.call('PUBLISH', 'stompbox:{' .. q .. '}:c', '')
  end
end
redis.call('PUBLISH', ARGV[5], epoch .. '\n' .. pos .. '\n' .. ARGV[4])
return pos
"#;

/// Reads a topic's kept history for a subscriber's recovery.
///
/// KEYS: stream, epoch, position counter. ARGV: mode (`last`, `after`,
/// `before`), position, count, the client's epoch (for `after` and
/// `before`), an epoch to use if the topic has none yet.
///
/// Returns the epoch, the head position, the oldest kept position, then
/// for each entry, oldest first, its position, time in ms and frame. An `after` or
/// `before` for another epoch reads nothing of positions that do not
/// compare: `after` becomes the whole kept history, `before` nothing.
pub(super) const HISTORY: &str = r#"
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[5]
  redis.call('SET', KEYS[2], epoch)
end
local head = tonumber(redis.call('GET', KEYS[3]) or '0')
local oldest = head + 1
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
if first[1] then
  oldest = tonumber(string.match(first[1][1], '%-(%d+)$'))
end
local mode = ARGV[1]
local pos = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local entries = {}
if mode ~= 'last' and ARGV[4] ~= epoch then
  if mode == 'after' then mode = 'last' else mode = 'none' end
end
if mode == 'last' then
  entries = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', n)
elseif mode == 'after' then
  if pos < head then
    entries = redis.call('XRANGE', KEYS[1], '0-' .. (pos + 1), '+', 'COUNT', n)
  end
elseif mode == 'before' then
  if pos > 1 then
    entries = redis.call('XREVRANGE', KEYS[1], '0-' .. (pos - 1), '-', 'COUNT', n)
  end
end
local out = {epoch, tostring(head), tostring(oldest)}
local from, to, step = 1, #entries, 1
if mode ~= 'after' then
  from, to, step = #entries, 1, -1
end
for i = from, to, step do
  local e = entries[i]
  local f, t = '', '0'
  for j = 1, #e[2], 2 do
    if e[2][j] == 'f' then f = e[2][j + 1] elseif e[2][j] == 't' then t = e[2][j + 1] end
  end
  table.insert(out, string.match(e[1], '%-(%d+)$'))
  table.insert(out, t)
  table.insert(out, f)
end
return out
"#;

/// Adds a bundle of messages to a queue's stream: the SENDs to one queue
/// that reached the command task together become one entry, so Redis
/// adds, hands out and acknowledges them once for all (`queues/`).
///
/// KEYS: stream, message counter, message count (waiting and
/// unacknowledged). ARGV: the queue's `max_length` (0: none), the queue's
/// notice channel, how many messages, the bundle, then (only with a
/// `max_length`) the byte offset at which each message ends.
///
/// Messages are numbered from the queue's counter and the entry is
/// `0-<the last one's number>`, so the counter counts messages and a
/// node can name an entry by a number. Nodes with consumers are told on
/// the channel that there is something to read. A queue at `max_length`
/// takes the first messages that fit; returns how many it took.
pub(super) const ENQUEUE: &str = r#"
local max = tonumber(ARGV[1])
local count = tonumber(ARGV[3])
local bundle = ARGV[4]
if max > 0 then
  local room = max - tonumber(redis.call('GET', KEYS[3]) or '0')
  if room < count then
    count = math.max(room, 0)
    if count == 0 then return 0 end
    bundle = string.sub(bundle, 1, tonumber(ARGV[4 + count]))
  end
end
local last = redis.call('INCRBY', KEYS[2], count)
redis.call('INCRBY', KEYS[3], count)
redis.call('XADD', KEYS[1], '0-' .. last, 'b', bundle)
redis.call('PUBLISH', ARGV[2], '')
return count
"#;

/// Settles queue messages a node was holding.
///
/// KEYS: stream, message count, the queue's hash of settled members of
/// partly settled entries. ARGV: the consumer group, how many messages
/// were settled, how many whole entries follow, those entries' numbers,
/// how many entries whose hash field goes follow, those numbers, then
/// pairs of an entry's number and the indexes (comma-separated) of its
/// members settled now.
///
/// A whole entry is acknowledged and deleted. A partly settled one stays
/// pending, and its settled members are written down, so a node that
/// takes it over (its holder gave it back or died) skips them.
pub(super) const SETTLE: &str = r#"
local function each_chunk(list, f)
  local i = 1
  while i <= #list do
    local chunk = {}
    for j = i, math.min(i + 999, #list) do chunk[#chunk + 1] = list[j] end
    f(chunk)
    i = i + 1000
  end
end
local at = 4
local whole = {}
for k = 1, tonumber(ARGV[3]) do
  whole[k] = '0-' .. ARGV[at]
  at = at + 1
end
each_chunk(whole, function(ids)
  redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
  redis.call('XDEL', KEYS[1], unpack(ids))
end)
local cleared = {}
local n = tonumber(ARGV[at])
at = at + 1
for k = 1, n do
  cleared[k] = ARGV[at]
  at = at + 1
end
each_chunk(cleared, function(fields) redis.call('HDEL', KEYS[3], unpack(fields)) end)
while at < #ARGV do
  local entry, members = ARGV[at], ARGV[at + 1]
  local before = redis.call('HGET', KEYS[3], entry)
  if before then members = before .. ',' .. members end
  redis.call('HSET', KEYS[3], entry, members)
  at = at + 2
end
if redis.call('DECRBY', KEYS[2], ARGV[2]) < 0 then
  redis.call('SET', KEYS[2], 0)
end
return 1
"#;

/// Takes over a queue's entries left idle by another node (gone, or gave
/// them back), with the members of each that were already settled.
///
/// KEYS: stream, the queue's hash of settled members. ARGV: group, this
/// node, the idle time in ms, how many entries at most.
///
/// Returns the entries as XAUTOCLAIM gives them, then for each its
/// settled members (comma-separated indexes, or empty).
pub(super) const CLAIM: &str = r#"
local got = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], '0-0', 'COUNT', ARGV[4])
local entries = got[2]
local settled = {}
for k, e in ipairs(entries) do
  settled[k] = redis.call('HGET', KEYS[2], string.match(e[1], '%-(%d+)$')) or ''
end
return {entries, settled}
"#;

/// A member joins a topic's presence (kept on the Redis that keeps node
/// state; the event is published apart, on the topic's own Redis).
///
/// KEYS: the topic's member hash for this node, the topic's node set,
/// this node's set of topics with members. ARGV: member id, member JSON,
/// this node, the topic.
pub(super) const PRESENCE_JOIN: &str = r#"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[4])
return 1
"#;

/// A member leaves a topic's presence.
///
/// KEYS: the topic's member hash for this node. ARGV: member id.
pub(super) const PRESENCE_LEAVE: &str = r#"
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
"#;

/// The members of a topic on the live nodes other than the caller.
///
/// KEYS: the topic's node set. ARGV: the key prefix of the topic's
/// member hashes (the node is appended), the caller, the prefix of the
/// nodes' liveness keys.
pub(super) const PRESENCE_READ: &str = r#"
local out = {}
for _, node in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if node ~= ARGV[2] and redis.call('EXISTS', ARGV[3] .. node) == 1 then
    for _, m in ipairs(redis.call('HVALS', ARGV[1] .. node)) do
      table.insert(out, m)
    end
  end
end
return out
"#;

/// Takes over a node that stopped refreshing its liveness key: once,
/// whichever survivor gets there first. Returns nothing when the node is
/// alive or already taken over; else its wills, then for each topic it
/// had members in, the topic and those members' JSON.
///
/// ARGV: the node, the key prefix (`stompbox:`).
pub(super) const TAKE_OVER: &str = r#"
local node, p = ARGV[1], ARGV[2]
if redis.call('EXISTS', p .. 'alive:' .. node) == 1 then return false end
if redis.call('SREM', p .. 'nodes', node) == 0 then return false end
local wills = redis.call('HVALS', p .. 'wills:' .. node)
redis.call('DEL', p .. 'wills:' .. node)
local topics = {}
for _, t in ipairs(redis.call('SMEMBERS', p .. 'ptopics:' .. node)) do
  local h = p .. '{' .. t .. '}:p:' .. node
  table.insert(topics, {t, redis.call('HVALS', h)})
  redis.call('DEL', h)
  redis.call('SREM', p .. '{' .. t .. '}:pn', node)
end
redis.call('DEL', p .. 'ptopics:' .. node)
return {wills, topics}
"#;
