package dataplane

import (
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// liveBytes reads, from the kernel's TCP_INFO of the downstream socket c
// (the app's or the client's), the bytes a plain TCP-to-TCP splice has
// carried so far: received from c is towards the destination, acked by c
// from it. It costs one getsockopt per call and nothing per write, so any
// copy strategy (buffers, splice(2), sockmap) is counted alike. Nil when c
// is not a socket.
//
// The kernel counts a FIN as one byte of sequence space: it is taken off
// once the peer's FIN was received or ours acknowledged. After c is closed
// the last counts are returned; the splice's own totals at the end are
// exact and the metrics add only what the live counts missed.
func liveBytes(c any) func() (int64, int64) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	var mu sync.Mutex
	var lastTo, lastFrom int64
	return func() (int64, int64) {
		mu.Lock()
		defer mu.Unlock()
		var info *unix.TCPInfo
		var gerr error
		if err := rc.Control(func(fd uintptr) { info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); err != nil || gerr != nil {
			return lastTo, lastFrom
		}
		to, from := int64(info.Bytes_received), int64(info.Bytes_acked)
		switch info.State {
		case unix.BPF_TCP_CLOSE_WAIT, unix.BPF_TCP_LAST_ACK, unix.BPF_TCP_CLOSING:
			to-- // the peer's FIN
		case unix.BPF_TCP_FIN_WAIT2:
			from-- // our FIN, acknowledged
		case unix.BPF_TCP_TIME_WAIT:
			to--
			from--
		case unix.BPF_TCP_ESTABLISHED, unix.BPF_TCP_FIN_WAIT1:
		default:
			return lastTo, lastFrom
		}
		lastTo, lastFrom = max(lastTo, to), max(lastFrom, from)
		return lastTo, lastFrom
	}
}
