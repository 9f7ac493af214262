package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"
)

// fullSync: every this many heartbeats, all user lists are read again.
const fullSync = 5

// forgetAfter: a node silent this long is removed from the registry.
const forgetAfter = time.Minute

// runBeat runs the heartbeat on its own goroutine, so that presence work
// (which can be slow with many users) never delays it.
func (r *Redis) runBeat() {
	defer r.wg.Done()
	beat := time.NewTicker(r.cfg.Beat)
	defer beat.Stop()
	for n := 1; ; n++ {
		select {
		case <-r.stop:
			return
		case <-beat.C:
			if n%fullSync == 0 {
				// Read every node's users again, whatever their versions
				// say: whatever a missed notice or a race left stale
				// converges within fullSync heartbeats.
				r.mu.Lock()
				clear(r.vers)
				r.mu.Unlock()
			}
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

// beat is one heartbeat; see beatScript. When Redis has lost this node's
// state (a restart), the node's names are claimed again at once.
func (r *Redis) beat() {
	r.mu.Lock()
	keys := []string{r.key("beat"), r.key("info"), r.key("users", r.cfg.ID), r.key("epoch")}
	seen := 0 // this node has used Redis before: an empty Redis has restarted
	if !r.lastOK.IsZero() {
		seen = 1
	}
	args := []any{r.cfg.ID, r.info(), r.cfg.TTL.Milliseconds(), forgetAfter.Milliseconds(), seen}
	r.mu.Unlock()
	ctx, cancel := r.ctx()
	defer cancel()
	res, err := beatScript.Run(ctx, r.rdb, keys, args...).Slice()
	if err != nil || len(res) != 4 {
		r.beatFailed(err)
		return
	}
	now, _ := res[0].(int64)
	missing, _ := res[1].(int64)
	if missing == 1 && !r.reclaim() {
		r.beatFailed(errors.New("claiming names again failed"))
		return
	}
	r.mu.Lock()
	if missing == 1 {
		r.pushOK = false // Redis lost our users (restart): write them again
	}
	pushed := r.pushOK
	wasDown := r.tried && time.Since(r.lastOK) >= r.cfg.TTL
	r.lastOK, r.tried = time.Now(), true
	r.mu.Unlock()
	if wasDown {
		r.log.Info("cluster: Redis reachable", "node", r.cfg.ID)
	}
	if !pushed {
		kick(r.localKick)
	}
	r.apply(now, pairs(res[2]), pairs(res[3]))
}

// reclaim takes this node's names again after Redis lost them; a name
// another live node took meanwhile is logged (the newer holder keeps it).
func (r *Redis) reclaim() bool {
	r.mu.Lock()
	keys := []string{r.key("beat"), r.key("names", r.cfg.ID)}
	args := []any{r.cfg.TTL.Milliseconds()}
	for _, c := range r.claims {
		for _, k := range c.keys {
			keys = append(keys, k)
			args = append(args, c.value)
		}
	}
	r.mu.Unlock()
	if len(keys) == 2 {
		return true
	}
	ctx, cancel := r.ctx()
	defer cancel()
	lost, err := reclaimScript.Run(ctx, r.rdb, keys, args...).Slice()
	if err != nil {
		return false
	}
	for _, l := range lost {
		if i, ok := l.(int64); ok && int(i) >= 3 && int(i) <= len(keys) {
			r.log.Warn("cluster: a name this node holds was taken on another node", "key", keys[i-1])
		}
	}
	r.log.Info("cluster: names claimed again after Redis lost them", "node", r.cfg.ID, "keys", len(keys)-2)
	return true
}

// info is this node's registry entry; r.mu held.
func (r *Redis) info() string {
	b, _ := json.Marshal(map[string]any{"media": r.cfg.Media, "ver": r.ver})
	return string(b)
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
		r.log.Debug("cluster: publishing users failed", "node", r.cfg.ID, "err", err)
		return
	}
	r.log.Debug("cluster: users published", "node", r.cfg.ID, "users", len(users))
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
	media := map[string]string{}
	for node, b := range beats {
		ms, err := strconv.ParseInt(b, 10, 64)
		if node == r.cfg.ID || err != nil || now-ms > r.cfg.TTL.Milliseconds() {
			continue
		}
		var info struct {
			Ver   int64  `json:"ver"`
			Media string `json:"media"`
		}
		_ = json.Unmarshal([]byte(infos[node]), &info)
		live[node] = strconv.FormatInt(info.Ver, 10)
		media[node] = info.Media
	}
	r.mu.Lock()
	r.media = media
	var gone, stale []string
	for node := range r.remote {
		if _, ok := live[node]; ok {
			delete(r.absent, node)
			continue
		}
		if _, listed := beats[node]; !listed {
			// Not stale but missing: Redis may have restarted and the
			// node not beaten since. Gone only after a TTL of that.
			since, seen := r.absent[node]
			if !seen {
				r.absent[node] = time.Now()
				continue
			}
			if time.Since(since) < r.cfg.TTL {
				continue
			}
		}
		delete(r.absent, node)
		gone = append(gone, node)
		delete(r.remote, node)
		delete(r.vers, node)
	}
	for node, ver := range live {
		if r.vers[node] != ver {
			stale = append(stale, node)
		}
	}
	r.mu.Unlock()
	r.lose(gone)
	for _, node := range gone {
		r.bury(node)
	}
	if len(stale) > 0 {
		r.fetchUsers(stale, live)
	}
}

// bury deletes the name keys a dead node still holds (any survivor may;
// doing it twice is harmless). A node that was only cut off claims its
// names again when it is back.
func (r *Redis) bury(node string) {
	ctx, cancel := r.ctx()
	defer cancel()
	if err := buryScript.Run(ctx, r.rdb, []string{r.key("names", node)}, node+"|").Err(); err != nil {
		r.log.Info("cluster: could not delete a dead node's names (claims skip them anyway)", "node", node, "err", err)
	}
	_ = r.rdb.Del(ctx, r.streamKey(node)).Err() // what was relayed to it; capped anyway
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
	r.log.Debug("cluster: users fetched", "node", r.cfg.ID, "of", nodes, "vers", vers)
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
