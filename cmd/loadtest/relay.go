package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
)

// The floor: a bare UDP relay doing the same fan-out as the SFU (each
// participant's packets go to the other participant of its call), on one
// socket with one reader, like the SFU's media port. With SRTP it also
// decrypts every packet with the sender's key and encrypts it with the
// receiver's, which is the least an SFU must do. It runs as a child
// process (this binary with -relay) so its CPU is measured alone.

const srtpProfile = srtp.ProtectionProfileAeadAes256Gcm // what pion peers negotiate

// hello registers a participant: "LTHI" + call id + side (0/1).
const helloLen = 12

func helloPacket(call uint32, side uint32) []byte {
	b := make([]byte, helloLen)
	copy(b, "LTHI")
	binary.BigEndian.PutUint32(b[4:], call)
	binary.BigEndian.PutUint32(b[8:], side)
	return b
}

// keys derives a participant's SRTP master key and salt for one direction
// (0: what it sends, 1: what it receives).
func keys(id uint32, dir byte) (key, salt []byte) {
	kl, _ := srtpProfile.KeyLen()
	sl, _ := srtpProfile.SaltLen()
	b := make([]byte, kl+sl)
	for i := range b {
		b[i] = byte(id*31) ^ byte(i*7) ^ dir
	}
	return b[:kl], b[kl:]
}

func newSRTP(id uint32, dir byte) (*srtp.Context, error) {
	k, s := keys(id, dir)
	return srtp.CreateContext(k, s, srtpProfile, srtp.SRTPReplayProtection(1024))
}

// relayMain is the child process: it listens, prints its address, relays
// until stdin closes.
func relayMain(mode string, rcvbuf int) error {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return err
	}
	if rcvbuf > 0 {
		_ = conn.SetReadBuffer(rcvbuf)
		_ = conn.SetWriteBuffer(rcvbuf)
	}
	fmt.Println(conn.LocalAddr().String())
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); _ = conn.Close() }()
	return relay(conn, mode == "srtp")
}

type relayPeer struct {
	to       netip.AddrPort
	dec, enc *srtp.Context // dec: from this participant; enc: to its partner
}

func relay(conn *net.UDPConn, withSRTP bool) error {
	peers := map[netip.AddrPort]*relayPeer{}
	type slot struct{ addr [2]netip.AddrPort }
	calls := map[uint32]*slot{}
	buf := make([]byte, 1500)
	out := make([]byte, 1500)
	var h rtp.Header
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return nil
		}
		p := peers[from]
		if p == nil {
			if n != helloLen || string(buf[:4]) != "LTHI" {
				continue
			}
			id, side := binary.BigEndian.Uint32(buf[4:]), binary.BigEndian.Uint32(buf[8:])&1
			s := calls[id]
			if s == nil {
				s = &slot{}
				calls[id] = s
			}
			s.addr[side] = from
			_, _ = conn.WriteToUDPAddrPort(buf[:n], from) // ack
			if !s.addr[0].IsValid() || !s.addr[1].IsValid() {
				continue
			}
			for side := range 2 {
				rp := &relayPeer{to: s.addr[1-side]}
				if withSRTP {
					me, other := 2*id+uint32(side), 2*id+uint32(1-side)
					if rp.dec, err = newSRTP(me, 0); err != nil {
						return err
					}
					if rp.enc, err = newSRTP(other, 1); err != nil {
						return err
					}
				}
				peers[s.addr[side]] = rp
			}
			continue
		}
		pkt := buf[:n]
		if withSRTP {
			plain, err := p.dec.DecryptRTP(out[:0], pkt, &h)
			if err != nil {
				continue
			}
			if pkt, err = p.enc.EncryptRTP(buf[:0], plain, &h); err != nil {
				continue
			}
		}
		_, _ = conn.WriteToUDPAddrPort(pkt, p.to)
	}
}

// relayProcess is a running floor relay.
type relayProcess struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	addr  *net.UDPAddr
}

func startRelay(mode string, rcvbuf int, cpus string) (*relayProcess, error) {
	cmd, stdin, line, err := startChild(cpus, nil, "-relay", mode, "-relay-rcvbuf", fmt.Sprint(rcvbuf))
	if cmd == nil {
		return nil, err
	}
	r := &relayProcess{cmd: cmd, stdin: stdin}
	if err == nil {
		r.addr, err = net.ResolveUDPAddr("udp4", line)
	}
	if err != nil {
		r.close()
		return nil, fmt.Errorf("relay: %w", err)
	}
	return r, nil
}

// startChild starts this program again with args (on cpus, if set, with
// env added to the environment) and reads the first line it prints. The
// child runs until its stdin is closed. cmd is nil if it did not start;
// otherwise the caller closes it, also when err is set (no line).
func startChild(cpus string, env []string, args ...string) (cmd *exec.Cmd, stdin io.WriteCloser, line string, err error) {
	self, err := os.Executable()
	if err != nil {
		return nil, nil, "", err
	}
	cmd = exec.Command(self, args...)
	if cpus != "" {
		cmd = exec.Command("taskset", append([]string{"-c", cpus, self}, args...)...)
	}
	cmd.Stderr = os.Stderr
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	stdin, err = cmd.StdinPipe()
	if err != nil {
		return nil, nil, "", err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, "", err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, "", err
	}
	line, err = bufio.NewReader(stdout).ReadString('\n')
	return cmd, stdin, strings.TrimSpace(line), err
}

func (r *relayProcess) pid() int { return r.cmd.Process.Pid }

func (r *relayProcess) close() {
	_ = r.stdin.Close()
	done := make(chan struct{})
	go func() { _ = r.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		_ = r.cmd.Process.Kill()
		<-done
	}
}

// udpPeer is a floor participant: the same media over a plain UDP socket
// (optionally SRTP-protected) to the relay.
type udpPeer struct {
	conn     *net.UDPConn
	snd      *sender
	rcv      receiver
	enc, dec *srtp.Context
	out      []byte
	hdrBuf   []byte
	stop     chan struct{}
	wg       sync.WaitGroup
	once     sync.Once
}

func newUDPPeer(relay *net.UDPAddr, call uint32, side uint32, withSRTP bool, prof mediaProfile) (*udpPeer, error) {
	conn, err := net.DialUDP("udp4", nil, relay)
	if err != nil {
		return nil, err
	}
	_ = conn.SetReadBuffer(1 << 20)
	id := 2*call + side
	p := &udpPeer{conn: conn, stop: make(chan struct{}), out: make([]byte, 1500)}
	if withSRTP {
		if p.enc, err = newSRTP(id, 0); err == nil {
			p.dec, err = newSRTP(id, 1)
		}
		if err != nil {
			_ = conn.Close()
			return nil, err
		}
	}
	p.snd = &sender{prof: prof, stream: id, write: p.writeRTP}
	// Register, retrying until the relay acknowledges.
	hello := helloPacket(call, side)
	ack := make([]byte, 64)
	for try := 0; ; try++ {
		if try == 20 {
			_ = conn.Close()
			return nil, errors.New("relay: no answer to hello")
		}
		_, _ = conn.Write(hello)
		_ = conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, err := conn.Read(ack); err == nil && n == helloLen {
			break
		}
	}
	_ = conn.SetReadDeadline(time.Time{})
	return p, nil
}

func (p *udpPeer) writeRTP(kind uint8, pkt *rtp.Packet) error {
	pkt.SSRC = 1000 + uint32(kind)
	pkt.PayloadType = 96 + kind
	b, err := pkt.Marshal()
	if err != nil {
		return err
	}
	if p.enc != nil {
		if b, err = p.enc.EncryptRTP(p.out[:0], b, nil); err != nil {
			return err
		}
	}
	_, err = p.conn.Write(b)
	return err
}

func (p *udpPeer) start() {
	p.wg.Add(2)
	go func() { defer p.wg.Done(); p.snd.run(p.stop) }()
	go func() { defer p.wg.Done(); p.read() }()
}

func (p *udpPeer) read() {
	buf := make([]byte, 1500)
	plain := make([]byte, 1500)
	var h rtp.Header
	for {
		n, err := p.conn.Read(buf)
		if err != nil {
			return
		}
		b := buf[:n]
		if n == helloLen {
			continue
		}
		if p.dec != nil {
			if b, err = p.dec.DecryptRTP(plain[:0], b, &h); err != nil {
				continue
			}
		}
		hl, err := h.Unmarshal(b)
		if err != nil {
			continue
		}
		p.rcv.record(b[hl:], h.SSRC == 1001, time.Now())
	}
}

func (p *udpPeer) close() {
	p.once.Do(func() {
		close(p.stop)
		_ = p.conn.Close()
		p.wg.Wait()
	})
}

// udpCall is one floor call.
type udpCall struct{ a, b *udpPeer }

func startUDPCall(_ context.Context, relay *net.UDPAddr, i int, withSRTP bool, prof mediaProfile) (*udpCall, error) {
	a, err := newUDPPeer(relay, uint32(i), 0, withSRTP, prof)
	if err != nil {
		return nil, err
	}
	b, err := newUDPPeer(relay, uint32(i), 1, withSRTP, prof)
	if err != nil {
		a.close()
		return nil, err
	}
	a.start()
	b.start()
	return &udpCall{a: a, b: b}, nil
}

func (c *udpCall) receivers() []*receiver { return []*receiver{&c.a.rcv, &c.b.rcv} }
func (c *udpCall) close()                 { c.a.close(); c.b.close() }
