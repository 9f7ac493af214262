package turn

import (
	"net"
	"net/netip"
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
	ip    netip.Addr
	since time.Time
}

// quota counts allocations per user, per source address and in total. pion
// asks the QuotaHandler before creating an allocation and reports
// creation/deletion as events; an accepted request is held as "pending"
// between the two so concurrent requests (TCP connections are served in
// parallel) cannot overshoot.
//
// The user is the name in the TURN REST username, which a visitor picks at
// login, so the per-user quota alone lets one host mint names until the
// total is gone. The per-source quota is keyed on something a visitor
// cannot mint at will: the client's IPv4 address, or its IPv6 /64 (one
// host usually owns a whole /64).
type quota struct {
	perUser int
	perIP   int
	total   int

	mu       sync.Mutex
	active   map[string]int
	activeIP map[netip.Addr]int
	nActive  int
	pending  map[string]pendingAlloc // keyed by client transport address
}

func newQuota(perUser, perIP, total int) *quota {
	return &quota{
		perUser:  perUser,
		perIP:    perIP,
		total:    total,
		active:   make(map[string]int),
		activeIP: make(map[netip.Addr]int),
		pending:  make(map[string]pendingAlloc),
	}
}

// sourceKey returns the per-source quota key of addr: its IPv4 address
// (IPv4-mapped IPv6 unmapped) or its IPv6 /64 prefix. It returns the zero
// Addr for addresses it cannot parse; those share one bucket.
func sourceKey(addr net.Addr) netip.Addr {
	var ip netip.Addr
	switch a := addr.(type) {
	case *net.UDPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	case *net.TCPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	default:
		if addr != nil {
			if ap, err := netip.ParseAddrPort(addr.String()); err == nil {
				ip = ap.Addr()
			}
		}
	}
	ip = ip.Unmap()
	if ip.Is6() {
		if p, err := ip.Prefix(64); err == nil {
			return p.Addr()
		}
	}

	return ip
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
	ip := sourceKey(src)
	now := time.Now()

	q.mu.Lock()
	defer q.mu.Unlock()
	q.prune(now)
	nUser, nIP := q.pendingFor(user, ip)
	if q.active[user]+nUser >= q.perUser || q.activeIP[ip]+nIP >= q.perIP ||
		q.nActive+len(q.pending) >= q.total {
		return false
	}
	q.pending[addrKey(src)] = pendingAlloc{user: user, ip: ip, since: now}

	return true
}

func (q *quota) prune(now time.Time) {
	for k, p := range q.pending {
		if now.Sub(p.since) > pendingTimeout {
			delete(q.pending, k)
		}
	}
}

// pendingFor counts the pending reservations of user and of source ip.
func (q *quota) pendingFor(user string, ip netip.Addr) (nUser, nIP int) {
	for _, p := range q.pending {
		if p.user == user {
			nUser++
		}
		if p.ip == ip {
			nIP++
		}
	}

	return nUser, nIP
}

func (q *quota) created(src net.Addr, username string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.pending, addrKey(src))
	q.active[quotaUser(username)]++
	q.activeIP[sourceKey(src)]++
	q.nActive++
}

func (q *quota) deleted(src net.Addr, username string) {
	user := quotaUser(username)
	ip := sourceKey(src)

	q.mu.Lock()
	defer q.mu.Unlock()
	decrement(q.active, user)
	decrement(q.activeIP, ip)
	if q.nActive > 0 {
		q.nActive--
	}
}

func decrement[K comparable](m map[K]int, k K) {
	if m[k] <= 1 {
		delete(m, k)
	} else {
		m[k]--
	}
}

// failed drops the reservation of a request that did not create an allocation.
func (q *quota) failed(src net.Addr) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.pending, addrKey(src))
}

// sourceCount returns the active allocations from the source of addr.
func (q *quota) sourceCount(addr net.Addr) int {
	q.mu.Lock()
	defer q.mu.Unlock()

	return q.activeIP[sourceKey(addr)]
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
		OnAllocationDeleted: func(src, _ net.Addr, _, username, _ string) {
			q.deleted(src, username)
		},
		OnAllocationError: func(src, _ net.Addr, _, _ string) {
			q.failed(src)
		},
	}
}
