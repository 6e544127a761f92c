package cache

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
	"time"
)

// The L2 envelope, version 1:
//
//	[0]       version (1)
//	[1]       flags: bit 0 = defined; other bits must be zero
//	[2:10]    creation time, unix milliseconds, big endian
//	[10:n-32] result as JSON
//	[n-32:n]  HMAC-SHA256(key, uvarint(len(redisKey)) || redisKey || bytes[0:n-32])
//
// The MAC covers the Redis key, so a valid entry copied under another key
// (another input, revision or epoch) fails verification. The creation time is
// signed too, so nobody with Redis access can extend an entry's life in L1.
const (
	envelopeVersion = 1
	envelopeHeader  = 10
	macSize         = sha256.Size
	flagDefined     = 1
	// maxEnvelope is the envelope of the largest result Set stores
	// (MaxEntryBytes of JSON).
	maxEnvelope = envelopeHeader + MaxEntryBytes + macSize
)

var (
	errEnvelopeShort   = errors.New("cache: L2 entry too short")
	errEnvelopeLong    = errors.New("cache: L2 entry longer than the largest entry stored")
	errEnvelopeVersion = errors.New("cache: L2 entry has an unknown version")
	errEnvelopeMAC     = errors.New("cache: L2 entry signature does not verify")
	errEnvelopeFlags   = errors.New("cache: L2 entry has unknown flags")
	errEnvelopeResult  = errors.New("cache: L2 entry result is not one JSON value")
)

// signer signs with the current key and verifies with it or any previous key.
// HMAC states are pooled because hmac.New costs several allocations.
type signer struct {
	keys  [][]byte // keys[0] signs; all verify
	pools []sync.Pool
}

func newSigner(current []byte, previous [][]byte) *signer {
	s := &signer{keys: append([][]byte{current}, previous...)}
	s.pools = make([]sync.Pool, len(s.keys))
	for i := range s.keys {
		k := s.keys[i]
		s.pools[i].New = func() any { return hmac.New(sha256.New, k) }
	}
	return s
}

// mac appends the MAC of (redisKey, payload) under key i to dst.
func (s *signer) mac(dst []byte, i int, redisKey string, payload []byte) []byte {
	h := s.pools[i].Get().(hash.Hash)
	h.Reset()
	var n [binary.MaxVarintLen64]byte
	// Writes to a hash never fail.
	_, _ = h.Write(n[:binary.PutUvarint(n[:], uint64(len(redisKey)))])
	_, _ = io.WriteString(h, redisKey)
	_, _ = h.Write(payload)
	dst = h.Sum(dst)
	s.pools[i].Put(h)
	return dst
}

// seal returns the signed envelope of v for redisKey.
func (s *signer) seal(redisKey string, v Value, created time.Time) ([]byte, error) {
	result := v.JSON
	if result == nil {
		var err error
		if result, err = json.Marshal(v.Result); err != nil {
			return nil, fmt.Errorf("cache: encode result for L2: %w", err)
		}
	}
	b := make([]byte, envelopeHeader, envelopeHeader+len(result)+macSize)
	b[0] = envelopeVersion
	if v.Defined {
		b[1] = flagDefined
	}
	binary.BigEndian.PutUint64(b[2:envelopeHeader], uint64(created.UnixMilli()))
	b = append(b, result...)
	return s.mac(b, 0, redisKey, b), nil
}

// open verifies and decodes an envelope read from redisKey. It returns the
// value and its creation time; any failure means the entry must not be used.
// A value longer than any entry written is refused before its MAC is
// computed: whoever can write to Redis must not make every reader hash
// megabytes.
func (s *signer) open(redisKey string, b []byte) (Value, time.Time, error) {
	if len(b) < envelopeHeader+macSize {
		return Value{}, time.Time{}, errEnvelopeShort
	}
	if len(b) > maxEnvelope {
		return Value{}, time.Time{}, errEnvelopeLong
	}
	if b[0] != envelopeVersion {
		return Value{}, time.Time{}, errEnvelopeVersion
	}
	payload, got := b[:len(b)-macSize], b[len(b)-macSize:]
	var want [macSize]byte
	ok := false
	for i := range s.keys {
		if hmac.Equal(got, s.mac(want[:0], i, redisKey, payload)) {
			ok = true
			break
		}
	}
	if !ok {
		return Value{}, time.Time{}, errEnvelopeMAC
	}
	if b[1]&^flagDefined != 0 {
		return Value{}, time.Time{}, errEnvelopeFlags
	}
	created := time.UnixMilli(int64(binary.BigEndian.Uint64(b[2:envelopeHeader])))
	dec := json.NewDecoder(bytes.NewReader(payload[envelopeHeader:]))
	dec.UseNumber()
	var result any
	if err := dec.Decode(&result); err != nil {
		return Value{}, time.Time{}, fmt.Errorf("%w: %w", errEnvelopeResult, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Value{}, time.Time{}, errEnvelopeResult
	}
	v := Value{Result: result, Defined: b[1]&flagDefined != 0}
	if v.Defined { // as the engine writes it: JSON only for a defined result
		v.JSON = append([]byte(nil), payload[envelopeHeader:]...)
	}
	return v, created, nil
}
