// Reading header blocks: HEADERS plus CONTINUATION frames, bounded in
// frames and bytes, decoded with HPACK and checked against RFC 9113
// sections 8.2 and 8.3.

package tunnel

import (
	"fmt"
	"strings"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// errMalformed is wrapped by the checks of a header list: the message is
// malformed (RFC 9113 section 8.1.1), a stream error of type
// PROTOCOL_ERROR.
var errMalformed = fmt.Errorf("%w: malformed header list", ErrBadRequest)

// readHeaderBlock reads the CONTINUATION frames that follow hf up to the
// end of its header block and decodes it. A block of more than
// Limits.HeaderFrames frames is errCalm (endless CONTINUATION, CVE-2024-27316
// class); one of more than twice MaxHeaderListSize encoded bytes, a
// PROTOCOL_ERROR; an HPACK error, a COMPRESSION_ERROR. The returned
// frame's Truncated is set when the decoded list exceeds
// MaxHeaderListSize; bad is non-nil (wrapping errMalformed) when a field
// breaks RFC 9113 section 8.2.1 or 8.3 (names, values, pseudo-header
// order and duplicates). The HPACK decoder sees every block whole, so the
// connection's header table stays in step whatever the verdict.
func (c *conn) readHeaderBlock(hf *http2.HeadersFrame) (mh *http2.MetaHeadersFrame, bad error, err error) {
	limit := int(c.set.MaxHeaderListSize)
	block := append([]byte(nil), hf.HeaderBlockFragment()...)
	frames := 1
	for ended := hf.HeadersEnded(); !ended; {
		f, err := c.fr.ReadFrame()
		if err != nil {
			return nil, nil, err
		}
		cf := f.(*http2.ContinuationFrame) // guaranteed by the Framer's frame order check
		frames++
		if frames > c.set.Limits.HeaderFrames {
			return nil, nil, errCalm{RefuseHeaderFlood}
		}
		if len(block)+len(cf.HeaderBlockFragment()) > 2*limit {
			return nil, nil, fmt.Errorf("%w: header block over %d bytes", http2.ConnectionError(http2.ErrCodeProtocol), 2*limit)
		}
		block = append(block, cf.HeaderBlockFragment()...)
		ended = cf.HeadersEnded()
	}
	if len(block) > 2*limit {
		return nil, nil, http2.ConnectionError(http2.ErrCodeProtocol)
	}
	mh = &http2.MetaHeadersFrame{HeadersFrame: hf}
	var chk fieldCheck
	size := 0
	c.hdec.SetEmitFunc(func(f hpack.HeaderField) {
		if bad == nil {
			bad = chk.add(f)
		}
		size += int(f.Size())
		if size > limit {
			mh.Truncated = true
		}
		if bad == nil && !mh.Truncated {
			mh.Fields = append(mh.Fields, f)
		}
	})
	defer c.hdec.SetEmitFunc(func(hpack.HeaderField) {})
	if _, err := c.hdec.Write(block); err != nil {
		return nil, nil, http2.ConnectionError(http2.ErrCodeCompression)
	}
	if err := c.hdec.Close(); err != nil {
		return nil, nil, http2.ConnectionError(http2.ErrCodeCompression)
	}
	return mh, bad, nil
}

// fieldCheck checks a header list field by field, in order.
type fieldCheck struct {
	sawRegular bool
	pseudo     []string
}

// add checks one field: RFC 9113 section 8.2.1 (lowercase names of token
// characters, values without NUL, CR, LF or surrounding whitespace) and
// section 8.3 (pseudo-header fields first, each at most once).
func (k *fieldCheck) add(f hpack.HeaderField) error {
	name := f.Name
	if strings.HasPrefix(name, ":") {
		if k.sawRegular {
			return fmt.Errorf("%w: pseudo-header %s after a regular field", errMalformed, truncate(name, 32))
		}
		for _, p := range k.pseudo {
			if p == name {
				return fmt.Errorf("%w: duplicate pseudo-header %s", errMalformed, truncate(name, 32))
			}
		}
		k.pseudo = append(k.pseudo, name)
		name = name[1:]
	} else {
		k.sawRegular = true
	}
	if !validFieldName(name) {
		return fmt.Errorf("%w: field name %q", errMalformed, truncate(f.Name, 32))
	}
	if !validFieldValue(f.Value) {
		return fmt.Errorf("%w: value of field %s", errMalformed, truncate(f.Name, 32))
	}
	return nil
}

// validFieldName: a non-empty token without uppercase letters.
func validFieldName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validFieldValue: no NUL, CR or LF, no leading or trailing SP or HTAB.
func validFieldValue(s string) bool {
	if s != "" && (s[0] == ' ' || s[0] == '\t' || s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		return false
	}
	return !strings.ContainsAny(s, "\x00\r\n")
}

// checkRequestFields applies the request rules of RFC 9113 to a decoded
// header list: only request pseudo-headers, and none of the
// connection-specific fields of section 8.2.2 (connection, keep-alive,
// proxy-connection, transfer-encoding, upgrade, and te other than
// "trailers"), and the CONNECT form of section 8.5.
func checkRequestFields(fields []hpack.HeaderField) error {
	var method string
	var pathOrScheme, authority bool
	for _, f := range fields {
		switch f.Name {
		case ":method":
			method = f.Value
		case ":scheme", ":path":
			pathOrScheme = true
		case ":authority":
			authority = true
		case ":protocol":
		case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
			return fmt.Errorf("%w: connection-specific field %s", errMalformed, f.Name)
		case "te":
			if f.Value != "trailers" {
				return fmt.Errorf("%w: te other than trailers", errMalformed)
			}
		default:
			if strings.HasPrefix(f.Name, ":") {
				return fmt.Errorf("%w: pseudo-header %s in a request", errMalformed, truncate(f.Name, 32))
			}
		}
	}
	// Section 8.5: a CONNECT carries :authority and neither :scheme nor
	// :path (extended CONNECT, with :protocol, is not served: 400).
	if method == "CONNECT" && (pathOrScheme || !authority) {
		return fmt.Errorf("%w: CONNECT with :scheme or :path, or without :authority", errMalformed)
	}
	return nil
}

// malformed answers a header block that breaks RFC 9113: a new request
// gets 400 and RST_STREAM(PROTOCOL_ERROR) (section 8.1.1: a stream error,
// after an optional response); a known stream is reset with
// PROTOCOL_ERROR. A HEADERS frame on a stream ID the peer may not use is a
// connection error, as in handleHeaders.
func (c *conn) malformed(id uint32, why error) error {
	c.mu.Lock()
	s := c.streams[id]
	if s == nil && (c.isClient || id%2 == 0 || id <= c.lastPeerID) {
		idle := c.isIdleStreamID(id) || !c.isClient
		c.mu.Unlock()
		if idle {
			return fmt.Errorf("%w: HEADERS on stream %d out of order", ErrProtocol, id)
		}
		return nil // a closed stream of ours: nothing to answer
	}
	if s == nil {
		c.lastPeerID = id
		c.resetSent.add(id)
	}
	c.mu.Unlock()
	c.ctr.protocolErrors.Add(1)
	if c.onMalformed != nil {
		c.onMalformed(id, why)
	} else {
		c.ctr.malformed.Add(1)
		c.log.Warn("hbone: malformed header list, stream reset", "stream", id, "reason", why.Error(), "peer", c.peer.String())
	}
	if s != nil {
		c.resetStream(id, http2.ErrCodeProtocol, fmt.Errorf("%w: %w", ErrProtocol, why))
	} else {
		err := c.writeFrame(func(fr *http2.Framer) error {
			c.hbuf.Reset()
			_ = c.henc.WriteField(hpack.HeaderField{Name: ":status", Value: "400"})
			if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hbuf.Bytes(), EndHeaders: true}); err != nil {
				return err
			}
			return fr.WriteRSTStream(id, http2.ErrCodeProtocol)
		})
		if err != nil {
			return err
		}
	}
	return c.spend(&c.fl.localResets, RefuseResetFlood)
}
