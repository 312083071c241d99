package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// hbonePort is the only port mesh pods may use between each other.
const hbonePort = 15008

// packet is one TCP packet of a capture, with its payload as tcpdump -A
// prints it (headers included, non-printable bytes as dots).
type packet struct {
	at       time.Time
	src, dst netip.AddrPort
	payload  string
}

// flowKey is a TCP connection, the same in both directions.
func (p packet) flowKey() string {
	a, b := p.src.String(), p.dst.String()
	if a > b {
		a, b = b, a
	}
	return a + "-" + b
}

var tcpdumpHeader = regexp.MustCompile(`^(\d+)\.(\d+) IP (\S+) > (\S+): `)

// parseTcpdump reads `tcpdump -n -tt -A` text: a header line per packet
// ("<unix s>.<us> IP a.b.c.d.port > e.f.g.h.port: ...") followed by its
// payload lines.
func parseTcpdump(text string) []packet {
	var out []packet
	var cur *packet
	var payload strings.Builder
	flush := func() {
		if cur != nil {
			cur.payload = payload.String()
			out = append(out, *cur)
		}
		cur = nil
		payload.Reset()
	}
	s := bufio.NewScanner(strings.NewReader(text))
	s.Buffer(make([]byte, 1<<20), 1<<24)
	for s.Scan() {
		l := s.Text()
		if m := tcpdumpHeader.FindStringSubmatch(l); m != nil {
			src, err1 := parseDottedAddrPort(m[3])
			dst, err2 := parseDottedAddrPort(strings.TrimSuffix(m[4], ":"))
			if err1 == nil && err2 == nil {
				flush()
				sec, _ := strconv.ParseInt(m[1], 10, 64)
				us, _ := strconv.ParseInt((m[2] + "000000")[:6], 10, 64)
				cur = &packet{at: time.Unix(sec, us*1000), src: src, dst: dst}
				continue
			}
		}
		if cur != nil {
			payload.WriteString(l)
			payload.WriteByte('\n')
		}
	}
	flush()
	return out
}

// parseDottedAddrPort parses tcpdump's "10.244.1.5.43210".
func parseDottedAddrPort(s string) (netip.AddrPort, error) {
	i := strings.LastIndexByte(s, '.')
	if i < 0 {
		return netip.AddrPort{}, fmt.Errorf("no port in %q", s)
	}
	a, err := netip.ParseAddr(s[:i])
	if err != nil {
		return netip.AddrPort{}, err
	}
	p, err := strconv.ParseUint(s[i+1:], 10, 16)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(a, uint16(p)), nil
}

// wireVerdict is what the captures of one event show.
type wireVerdict struct {
	packets   int      // TCP packets between mesh addresses (any port)
	hbone     int      // of which on port 15008
	plaintext int      // of which on another port, in connections counted
	marker    int      // packets carrying a marker in the clear, in connections counted
	examples  []string // a few plaintext packets, for the failure message
}

// judgeWire classifies pkts: a packet between two mesh addresses not on
// port 15008 is plaintext. Only connections whose first captured packet is
// at or after since and before until count (zero times: no bound), so a
// window where plaintext is expected can be judged apart.
func judgeWire(pkts []packet, mesh map[netip.Addr]bool, markers []string, since, until time.Time) wireVerdict {
	var v wireVerdict
	first := map[string]time.Time{}
	for _, p := range pkts {
		k := p.flowKey()
		if _, ok := first[k]; !ok {
			first[k] = p.at
		}
		if !mesh[p.src.Addr()] || !mesh[p.dst.Addr()] {
			continue
		}
		v.packets++
		if p.src.Port() == hbonePort || p.dst.Port() == hbonePort {
			v.hbone++
			continue
		}
		if !inWindow(first[k], since, until) {
			continue
		}
		v.plaintext++
		if len(v.examples) < 5 {
			v.examples = append(v.examples, fmt.Sprintf("%s %s > %s", p.at.UTC().Format("15:04:05.000"), p.src, p.dst))
		}
	}
	for _, p := range pkts {
		if !inWindow(first[p.flowKey()], since, until) {
			continue
		}
		for _, m := range markers {
			if strings.Contains(p.payload, m) {
				v.marker++
				if len(v.examples) < 8 {
					v.examples = append(v.examples, fmt.Sprintf("%s %s > %s carries %q", p.at.UTC().Format("15:04:05.000"), p.src, p.dst, m))
				}
				break
			}
		}
	}
	return v
}

func inWindow(at, since, until time.Time) bool {
	return !at.Before(since) && (until.IsZero() || at.Before(until))
}

// readCapture reads a pcap file as packets.
func readCapture(ctx context.Context, file string) ([]packet, error) {
	out, err := exec.CommandContext(ctx, "tcpdump", "-r", file, "-n", "-tt", "-A").Output()
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", file, err)
	}
	return parseTcpdump(string(out)), nil
}

func TestJudgeWire(t *testing.T) {
	text := `1733464800.100000 IP 10.244.1.5.43210 > 10.244.2.3.15008: Flags [S], seq 1, length 0
E..<..@.@.....
1733464800.200000 IP 10.244.1.5.43211 > 10.244.2.3.8081: Flags [P.], seq 1:6, length 5
E..<..@.@.....LC-MARK-1
1733464800.300000 IP 10.244.2.3.8081 > 10.244.1.5.43211: Flags [.], ack 6, length 0
E..<..@.@.....
1733464801.500000 IP 10.244.1.9.5555 > 10.244.2.3.8080: Flags [S], seq 1, length 0
E..<..@.@.....
1733464801.600000 IP 10.0.0.1.5555 > 10.244.2.3.8080: Flags [S], seq 1, length 0
`
	pkts := parseTcpdump(text)
	if len(pkts) != 5 {
		t.Fatalf("parsed %d packets, want 5: %+v", len(pkts), pkts)
	}
	if pkts[1].dst.Port() != 8081 || !strings.Contains(pkts[1].payload, "LC-MARK-1") || pkts[1].at.UnixMilli() != 1733464800200 {
		t.Fatalf("packet 1 parsed as %+v", pkts[1])
	}
	mesh := map[netip.Addr]bool{}
	for _, a := range []string{"10.244.1.5", "10.244.2.3", "10.244.1.9"} {
		mesh[netip.MustParseAddr(a)] = true
	}
	v := judgeWire(pkts, mesh, []string{"LC-MARK"}, time.Time{}, time.Time{})
	if v.packets != 4 || v.hbone != 1 || v.plaintext != 3 || v.marker != 1 {
		t.Errorf("all: %+v", v)
	}
	// Since 1733464801: only the connection from .9 counts (the node's
	// packet is not between mesh pods).
	v = judgeWire(pkts, mesh, []string{"LC-MARK"}, time.Unix(1733464801, 0), time.Time{})
	if v.plaintext != 1 || v.marker != 0 {
		t.Errorf("since: %+v", v)
	}
	v = judgeWire(pkts, mesh, []string{"LC-MARK"}, time.Time{}, time.Unix(1733464801, 0))
	if v.plaintext != 2 || v.marker != 1 {
		t.Errorf("until: %+v", v)
	}
}
