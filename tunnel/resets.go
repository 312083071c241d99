package tunnel

// recentResets remembers the last streams this endpoint reset, so frames
// the peer had already sent on them when the RST_STREAM reached it are
// ignored, as RFC 9113 section 5.1 requires of a stream closed by sending
// RST_STREAM ("An endpoint MUST ignore frames that it receives on closed
// streams after it has sent a RST_STREAM frame"). Answering each of those
// DATA frames with another RST_STREAM made a revoked stream with data in
// flight cost the peer hundreds of frames on a closed stream, which its
// flood guard then counted against the whole connection.
//
// It is bounded: the oldest entries are forgotten, and a stream forgotten
// is treated as any other closed stream. Guarded by conn.mu.
type recentResets struct {
	ring [recentResetsSize]uint32
	next int
	set  map[uint32]struct{}
}

const recentResetsSize = 256

func (r *recentResets) add(id uint32) {
	if r.set == nil {
		r.set = make(map[uint32]struct{}, recentResetsSize)
	}
	if _, ok := r.set[id]; ok {
		return
	}
	if old := r.ring[r.next]; old != 0 {
		delete(r.set, old)
	}
	r.ring[r.next] = id
	r.next = (r.next + 1) % recentResetsSize
	r.set[id] = struct{}{}
}

func (r *recentResets) has(id uint32) bool {
	_, ok := r.set[id]
	return ok
}
