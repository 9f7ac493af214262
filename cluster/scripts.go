package cluster

import "github.com/redis/go-redis/v9"

// The Lua scripts: each runs atomically in Redis. A name key holds
// "<node>|<random>" of the session holding it, without expiry: the lease
// is the holder node's heartbeat (a key whose node has not beaten for TTL
// is free), so a heartbeat costs the same whatever the number of users.
// Each node lists the keys it holds in the set P names:<node>, so that the
// survivors can delete a dead node's keys.

// luaNow is Redis's clock in ms (the nodes' clocks never matter).
const luaNow = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

// luaLive(v) reports whether the node holding value v has beaten within
// ARGV ttl (the caller sets ttl), using the beat hash KEYS[1].
const luaLive = `
local function live(v)
  local node = string.match(v, '^([^|]*)|')
  if not node then return false end
  local b = redis.call('HGET', KEYS[1], node)
  return b ~= false and now - tonumber(b) <= ttl
end
`

// claimScript: KEYS[1] beat hash, KEYS[2] this node's names set, KEYS[3]
// the epoch key, KEYS[4..] the name's keys; ARGV[1] the value, ARGV[2] TTL
// ms, ARGV[3] settle ms. Takes every key for ARGV[1], or none (returns 0)
// if one is held by a live session elsewhere. Within settle ms of Redis
// starting empty (the epoch key is set by the first heartbeat), it
// returns -1: the nodes have not all claimed their names again yet.
var claimScript = redis.NewScript(luaNow + `local ttl = tonumber(ARGV[2])` + luaLive + `
local epoch = redis.call('GET', KEYS[3])
if not epoch or now - tonumber(epoch) < tonumber(ARGV[3]) then return -1 end
for i = 4, #KEYS do
  local v = redis.call('GET', KEYS[i])
  if v and v ~= ARGV[1] and live(v) then return 0 end
end
for i = 4, #KEYS do
  redis.call('SET', KEYS[i], ARGV[1])
  redis.call('SADD', KEYS[2], KEYS[i])
end
return 1`)

// reclaimScript: as claimScript for many sessions at once (KEYS[3..] with
// values ARGV[2..], TTL ARGV[1]), after Redis lost them; returns the
// indexes of keys a live session elsewhere holds now.
var reclaimScript = redis.NewScript(luaNow + `local ttl = tonumber(ARGV[1])` + luaLive + `
local lost = {}
for i = 3, #KEYS do
  local v = redis.call('GET', KEYS[i])
  if v and v ~= ARGV[i - 1] and live(v) then
    table.insert(lost, i)
  else
    redis.call('SET', KEYS[i], ARGV[i - 1])
    redis.call('SADD', KEYS[2], KEYS[i])
  end
end
return lost`)

// releaseScript: KEYS[1] this node's names set, KEYS[2..] keys; deletes
// those that still hold ARGV[1].
var releaseScript = redis.NewScript(`
for i = 2, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) end
  redis.call('SREM', KEYS[1], KEYS[i])
end
return 1`)

// buryScript: KEYS[1] a dead node's names set; deletes its keys that still
// name it (ARGV[1] = "<node>|") and the set.
var buryScript = redis.NewScript(`
for _, k in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local v = redis.call('GET', k)
  if v and string.sub(v, 1, #ARGV[1]) == ARGV[1] then redis.call('DEL', k) end
end
redis.call('DEL', KEYS[1])
return 1`)

// locateScript: KEYS[1] the name key, KEYS[2] the beat hash; returns the
// node holding the name if it is live (ARGV[1] TTL ms), else nil.
var locateScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v then return false end
local node = string.match(v, '^([^|]*)|')
if not node then return false end
local b = redis.call('HGET', KEYS[2], node)
if not b then return false end` + luaNow + `
if now - tonumber(b) > tonumber(ARGV[1]) then return false end
return node`)

// beatScript: notes when Redis started serving the cluster (KEYS[4], the
// epoch, unless set: now if this node has seen Redis before (ARGV[5] = 1:
// a restart, claims wait), else 0 (a new cluster)), stamps node ARGV[1] in
// the beat hash (KEYS[1]), writes its info if missing
// (ARGV[2]) in the info hash (KEYS[2]), renews its users key (KEYS[3],
// lease ARGV[3] ms), forgets nodes silent for ARGV[4] ms, and returns
// {now, 1 if Redis lost this node's state (restart: no beat entry or no
// users key), beat hash, info hash}.
var beatScript = redis.NewScript(luaNow + `
if ARGV[5] == '1' then redis.call('SET', KEYS[4], now, 'NX') else redis.call('SET', KEYS[4], 0, 'NX') end
local fresh = redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0
redis.call('HSET', KEYS[1], ARGV[1], now)
-- Only when missing: the info's version changes with the users key, in
-- one transaction (pushLocal); a heartbeat must never set it back.
redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])
local missing = 1 - redis.call('PEXPIRE', KEYS[3], ARGV[3])
if fresh then missing = 1 end
local beats = redis.call('HGETALL', KEYS[1])
for i = 1, #beats, 2 do
  if now - tonumber(beats[i + 1]) > tonumber(ARGV[4]) then
    redis.call('HDEL', KEYS[1], beats[i])
    redis.call('HDEL', KEYS[2], beats[i])
  end
end
return {now, missing, redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])}`)
