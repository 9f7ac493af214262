package turn

import (
	"net"
	"strings"
	"sync"
	"time"

	pturn "github.com/pion/turn/v4"
)

// pendingTimeout bounds how long an accepted-but-unconfirmed allocation
// counts against a quota. pion creates the allocation synchronously right
// after the quota check, so this only matters if creation fails without
// reporting an error event.
const pendingTimeout = 10 * time.Second

type pendingAlloc struct {
	user  string
	since time.Time
}

// quota counts allocations per user and in total. pion asks the QuotaHandler
// before creating an allocation and reports creation/deletion as events; an
// accepted request is held as "pending" between the two so concurrent
// requests (TCP connections are served in parallel) cannot overshoot.
type quota struct {
	perUser int
	total   int

	mu      sync.Mutex
	active  map[string]int
	nActive int
	pending map[string]pendingAlloc // keyed by client transport address
}

func newQuota(perUser, total int) *quota {
	return &quota{
		perUser: perUser,
		total:   total,
		active:  make(map[string]int),
		pending: make(map[string]pendingAlloc),
	}
}

// quotaUser returns the quota key of a TURN REST username "<expiry>:<user>":
// the part after the first colon, or the whole username.
func quotaUser(username string) string {
	if _, user, ok := strings.Cut(username, ":"); ok {
		return user
	}

	return username
}

func addrKey(addr net.Addr) string {
	if addr == nil {
		return ""
	}

	return addr.Network() + "/" + addr.String()
}

// allow is the pion QuotaHandler: it admits and reserves one allocation.
func (q *quota) allow(username, _ string, src net.Addr) bool {
	user := quotaUser(username)
	now := time.Now()

	q.mu.Lock()
	defer q.mu.Unlock()
	q.prune(now)
	if q.active[user]+q.pendingFor(user) >= q.perUser || q.nActive+len(q.pending) >= q.total {
		return false
	}
	q.pending[addrKey(src)] = pendingAlloc{user: user, since: now}

	return true
}

func (q *quota) prune(now time.Time) {
	for k, p := range q.pending {
		if now.Sub(p.since) > pendingTimeout {
			delete(q.pending, k)
		}
	}
}

func (q *quota) pendingFor(user string) int {
	n := 0
	for _, p := range q.pending {
		if p.user == user {
			n++
		}
	}

	return n
}

func (q *quota) created(src net.Addr, username string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.pending, addrKey(src))
	q.active[quotaUser(username)]++
	q.nActive++
}

func (q *quota) deleted(username string) {
	user := quotaUser(username)

	q.mu.Lock()
	defer q.mu.Unlock()
	if q.active[user] <= 1 {
		delete(q.active, user)
	} else {
		q.active[user]--
	}
	if q.nActive > 0 {
		q.nActive--
	}
}

// failed drops the reservation of a request that did not create an allocation.
func (q *quota) failed(src net.Addr) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.pending, addrKey(src))
}

// counts returns the active allocations of user and in total.
func (q *quota) counts(user string) (perUser, total int) {
	q.mu.Lock()
	defer q.mu.Unlock()

	return q.active[user], q.nActive
}

// eventHandler wires the quota to pion's allocation events.
func (q *quota) eventHandler() pturn.EventHandler {
	return pturn.EventHandler{
		OnAllocationCreated: func(src, _ net.Addr, _, username, _ string, _ net.Addr, _ int) {
			q.created(src, username)
		},
		OnAllocationDeleted: func(_, _ net.Addr, _, username, _ string) {
			q.deleted(username)
		},
		OnAllocationError: func(src, _ net.Addr, _, _ string) {
			q.failed(src)
		},
	}
}
