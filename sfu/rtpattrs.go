package sfu

import (
	"strings"

	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// headerCache parses each incoming packet's RTP header once, into a header
// and an Attributes map kept per stream and reused, and hands both up the
// read chain: pion's interceptors above it (the receiver reports) find the
// header there instead of allocating a map and a header per packet.
// Registered before them, it is the innermost reader.
//
// The map and header are reused on the next Read of the same stream, so
// nothing may keep them past it: pion's report interceptor uses the header
// during the call, the upTrack's read loop (the one reader of a stream)
// looks at the map before its next Read. Streams whose attributes pion
// keeps are left alone: the RTX repair stream's travel through a channel
// to the media stream's reader. (pion also keeps attributes of packets it
// peeks at to find an undeclared simulcast stream, which needs the MID
// and RID extensions; the SFU does not negotiate them.)
type headerCache struct {
	interceptor.NoOp
	key any // pion's (unexported) key of the parsed header
}

type headerCacheFactory struct{ key any }

// newHeaderCacheFactory finds the attribute key pion stores a parsed
// header under, by letting it store one.
func newHeaderCacheFactory() headerCacheFactory {
	a := interceptor.Attributes{}
	raw, _ := (&rtp.Header{Version: 2}).Marshal()
	_, _ = a.GetRTPHeader(raw)
	var key any
	for k := range a {
		key = k
	}
	return headerCacheFactory{key: key}
}

func (f headerCacheFactory) NewInterceptor(string) (interceptor.Interceptor, error) {
	return &headerCache{key: f.key}, nil
}

type cachedHeader struct {
	attrs interceptor.Attributes
	hdr   rtp.Header
}

func (c *headerCache) BindRemoteStream(info *interceptor.StreamInfo, r interceptor.RTPReader) interceptor.RTPReader {
	if c.key == nil || strings.EqualFold(info.MimeType, webrtc.MimeTypeRTX) {
		return r
	}
	s := &cachedHeader{attrs: interceptor.Attributes{}}
	return interceptor.RTPReaderFunc(func(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
		n, attr, err := r.Read(b, a)
		if err != nil || attr != nil {
			return n, attr, err
		}
		if _, err := s.hdr.Unmarshal(b[:n]); err != nil {
			delete(s.attrs, c.key) // let the next reader fail as it would
			return n, nil, nil
		}
		s.attrs[c.key] = &s.hdr
		return n, s.attrs, nil
	})
}
