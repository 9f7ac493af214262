package cluster

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// claimScript takes every key for ARGV[1] (lease ARGV[2] ms), or none if
// one is held by another value.
var claimScript = redis.NewScript(`
for i = 1, #KEYS do
  local v = redis.call('GET', KEYS[i])
  if v and v ~= ARGV[1] then return 0 end
end
for i = 1, #KEYS do redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2]) end
return 1`)

// releaseScript deletes the keys that still hold ARGV[1].
var releaseScript = redis.NewScript(`
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) end
end
return 1`)

// locateScript returns the node holding KEYS[1] if its heartbeat (in the
// hash KEYS[2]) is younger than ARGV[1] ms, else nil.
var locateScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v then return false end
local node = string.match(v, '^([^|]*)|')
if not node then return false end
local b = redis.call('HGET', KEYS[2], node)
if not b then return false end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now - tonumber(b) > tonumber(ARGV[1]) then return false end
return node`)

// beatScript stamps node ARGV[1] in the beat hash (KEYS[1]) with Redis's
// clock and its info (ARGV[2]) in the info hash (KEYS[2]), renews its users
// key (KEYS[3]) and every name it holds (KEYS[4..], values ARGV[5..]; a
// name lost to a restart is taken again, one taken by someone else is
// reported), forgets nodes silent for ARGV[4] ms, and returns
// {now, users key missing, {lost key indexes}, beat hash, info hash}.
var beatScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], now)
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local missing = redis.call('PEXPIRE', KEYS[3], ARGV[3])
local lost = {}
for i = 4, #KEYS do
  local v = redis.call('GET', KEYS[i])
  if v == ARGV[i + 1] then redis.call('PEXPIRE', KEYS[i], ARGV[3])
  elseif not v then redis.call('SET', KEYS[i], ARGV[i + 1], 'PX', ARGV[3])
  else table.insert(lost, i - 3) end
end
local beats = redis.call('HGETALL', KEYS[1])
for i = 1, #beats, 2 do
  if now - tonumber(beats[i + 1]) > tonumber(ARGV[4]) then
    redis.call('HDEL', KEYS[1], beats[i])
    redis.call('HDEL', KEYS[2], beats[i])
  end
end
return {now, 1 - missing, lost, redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])}`)

// forgetAfter: a node silent this long is removed from the registry.
const forgetAfter = time.Minute

// runBeat runs the heartbeat on its own goroutine, so that presence work
// (which can be slow with many users) never delays it.
func (r *Redis) runBeat() {
	defer r.wg.Done()
	beat := time.NewTicker(r.cfg.Beat)
	defer beat.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-beat.C:
			r.beat()
		}
	}
}

// runSync runs the presence exchange: this node's list when it changed,
// the others' when they announce a change, at most once per Sync each.
func (r *Redis) runSync() {
	defer r.wg.Done()
	pace := time.NewTicker(r.cfg.Sync)
	defer pace.Stop()
	var localDirty, remoteDirty bool
	for {
		select {
		case <-r.stop:
			return
		case <-r.localKick:
			localDirty = true
		case <-r.remoteKick:
			remoteDirty = true
		case <-pace.C:
			if localDirty {
				localDirty = false
				r.pushLocal()
			}
			if remoteDirty {
				remoteDirty = false
				r.refresh()
			}
		}
	}
}

// ctx bounds one Redis round trip: half the TTL, so that a slow Redis
// costs a late heartbeat, not a missed one.
func (r *Redis) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), r.cfg.TTL/2)
}

// beat is one heartbeat; see beatScript.
func (r *Redis) beat() {
	r.mu.Lock()
	keys := []string{r.key("beat"), r.key("info"), r.key("users", r.cfg.ID)}
	args := []any{r.cfg.ID, r.info(), r.cfg.TTL.Milliseconds(), forgetAfter.Milliseconds()}
	values := make([]string, 0, len(r.claims))
	for _, c := range r.claims {
		for _, k := range c.keys {
			keys = append(keys, k)
			args = append(args, c.value)
			values = append(values, c.value)
		}
	}
	r.mu.Unlock()
	ctx, cancel := r.ctx()
	defer cancel()
	res, err := beatScript.Run(ctx, r.rdb, keys, args...).Slice()
	if err != nil || len(res) != 5 {
		r.beatFailed(err)
		return
	}
	now, _ := res[0].(int64)
	r.mu.Lock()
	if missing, _ := res[1].(int64); missing == 1 {
		r.pushOK = false // Redis lost our users (restart): write them again
	}
	pushed := r.pushOK
	wasDown := r.tried && time.Since(r.lastOK) >= r.cfg.TTL
	r.lastOK, r.tried = time.Now(), true
	r.mu.Unlock()
	if lost, _ := res[2].([]any); len(lost) > 0 {
		r.lostNames(keys[3:], values, lost)
	}
	if wasDown {
		r.log.Info("cluster: Redis reachable", "node", r.cfg.ID)
	}
	if !pushed {
		kick(r.localKick)
	}
	r.apply(now, pairs(res[3]), pairs(res[4]))
}

// info is this node's registry entry; r.mu held.
func (r *Redis) info() string {
	b, _ := json.Marshal(map[string]any{"media": r.cfg.Media, "ver": r.ver})
	return string(b)
}

// lostNames logs names another node took while this one could not renew
// them (a Redis outage longer than the lease): the clash is the price of
// letting both nodes go on; the newer holder keeps the key.
func (r *Redis) lostNames(keys, values []string, lost []any) {
	for _, l := range lost {
		if i, ok := l.(int64); ok && int(i) >= 1 && int(i) <= len(keys) {
			r.log.Warn("cluster: a name this node holds was taken on another node", "key", keys[i-1])
		}
	}
}

// beatFailed notes a failed heartbeat; once the last success is older
// than TTL every other node counts as gone.
func (r *Redis) beatFailed(err error) {
	r.mu.Lock()
	r.tried = true
	down := time.Since(r.lastOK) >= r.cfg.TTL
	r.pushOK = false
	var gone []string
	if down {
		for node := range r.remote {
			gone = append(gone, node)
		}
		clear(r.remote)
		clear(r.vers)
	}
	r.mu.Unlock()
	r.log.Warn("cluster: heartbeat failed", "node", r.cfg.ID, "err", err, "cut_off", down)
	r.lose(gone)
}

func (r *Redis) lose(gone []string) {
	for _, node := range gone {
		r.log.Warn("cluster: node gone", "node", node, "seen_by", r.cfg.ID)
		r.ev.NodeDown(node)
	}
	if len(gone) > 0 {
		r.ev.PresenceChanged()
	}
}

// pushLocal writes this node's users when they changed (or Redis lost them).
func (r *Redis) pushLocal() {
	users := r.ev.LocalUsers()
	slices.Sort(users)
	list := strings.Join(users, "\n")
	r.mu.Lock()
	if r.pushOK && list == r.pushed {
		r.mu.Unlock()
		return
	}
	r.ver++
	info := r.info()
	r.mu.Unlock()
	ctx, cancel := r.ctx()
	defer cancel()
	pipe := r.rdb.TxPipeline()
	pipe.Set(ctx, r.key("users", r.cfg.ID), list, r.cfg.TTL)
	pipe.HSet(ctx, r.key("info"), r.cfg.ID, info)
	pipe.Publish(ctx, r.key("presence"), r.cfg.ID)
	if _, err := pipe.Exec(ctx); err != nil {
		r.mu.Lock()
		r.pushOK = false
		r.mu.Unlock()
		return
	}
	r.mu.Lock()
	r.pushed, r.pushOK = list, true
	r.mu.Unlock()
}

// refresh reads the registry and the users of nodes that changed.
func (r *Redis) refresh() {
	ctx, cancel := r.ctx()
	defer cancel()
	pipe := r.rdb.Pipeline()
	t := pipe.Time(ctx)
	beats := pipe.HGetAll(ctx, r.key("beat"))
	infos := pipe.HGetAll(ctx, r.key("info"))
	if _, err := pipe.Exec(ctx); err != nil {
		return // the heartbeat notices
	}
	r.apply(t.Val().UnixMilli(), beats.Val(), infos.Val())
}

// apply takes the registry as of Redis time now: nodes that stopped
// beating are gone; nodes whose user list changed are read again.
func (r *Redis) apply(now int64, beats, infos map[string]string) {
	live := map[string]string{} // node -> info version
	for node, b := range beats {
		ms, err := strconv.ParseInt(b, 10, 64)
		if node == r.cfg.ID || err != nil || now-ms > r.cfg.TTL.Milliseconds() {
			continue
		}
		var info struct {
			Ver int64 `json:"ver"`
		}
		_ = json.Unmarshal([]byte(infos[node]), &info)
		live[node] = strconv.FormatInt(info.Ver, 10)
	}
	r.mu.Lock()
	var gone, stale []string
	for node := range r.remote {
		if _, ok := live[node]; !ok {
			gone = append(gone, node)
			delete(r.remote, node)
			delete(r.vers, node)
		}
	}
	for node, ver := range live {
		if r.vers[node] != ver {
			stale = append(stale, node)
		}
	}
	r.mu.Unlock()
	r.lose(gone)
	if len(stale) > 0 {
		r.fetchUsers(stale, live)
	}
}

// fetchUsers reads the user lists of nodes (at the versions in vers).
func (r *Redis) fetchUsers(nodes []string, vers map[string]string) {
	keys := make([]string, len(nodes))
	for i, n := range nodes {
		keys[i] = r.key("users", n)
	}
	ctx, cancel := r.ctx()
	defer cancel()
	vals, err := r.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	for i, n := range nodes {
		s, _ := vals[i].(string)
		var users []string
		if s != "" {
			users = strings.Split(s, "\n")
		}
		r.remote[n], r.vers[n] = users, vers[n]
	}
	r.mu.Unlock()
	r.ev.PresenceChanged()
}

// pairs turns a flat HGETALL reply into a map.
func pairs(v any) map[string]string {
	flat, _ := v.([]any)
	m := make(map[string]string, len(flat)/2)
	for i := 0; i+1 < len(flat); i += 2 {
		k, _ := flat[i].(string)
		val, _ := flat[i+1].(string)
		m[k] = val
	}
	return m
}
