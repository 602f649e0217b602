package policy

import (
	"hash/maphash"
	"maps"
)

// nShards is the number of pieces each index map is cut into. An update
// copies only the pieces it touches, so its cost is about n/nShards entries
// plus nShards pointers instead of n entries.
const nShards = 64

var shardSeed = maphash.MakeSeed()

func shardOfString(k string) int { return int(maphash.String(shardSeed, k) & (nShards - 1)) }
func shardOfBytes(k []byte) int  { return int(maphash.Bytes(shardSeed, k) & (nShards - 1)) }

// shardMap is a map cut into pieces by key hash. It is never modified once
// a Set holds it; updates go through a shardEdit.
type shardMap[V any] struct {
	m [nShards]map[string]V
}

func (s *shardMap[V]) get(k string) (V, bool) {
	v, ok := s.m[shardOfString(k)][k]
	return v, ok
}

// getBytes looks k up without converting it to a string on the heap.
func (s *shardMap[V]) getBytes(k []byte) V {
	return s.m[shardOfBytes(k)][string(k)]
}

// shardEdit builds a new shardMap from an old one, copying each piece the
// first time it is written.
type shardEdit[V any] struct {
	dst    *shardMap[V]
	copied [nShards]bool
}

func editShards[V any](src *shardMap[V]) *shardEdit[V] {
	dst := *src
	return &shardEdit[V]{dst: &dst}
}

// freshShards returns an edit over an empty map whose pieces are all owned.
func freshShards[V any]() *shardEdit[V] {
	e := &shardEdit[V]{dst: new(shardMap[V])}
	for i := range e.dst.m {
		e.dst.m[i] = make(map[string]V)
		e.copied[i] = true
	}
	return e
}

// shard returns the writable piece that holds k.
func (e *shardEdit[V]) shard(k string) map[string]V {
	i := shardOfString(k)
	if !e.copied[i] {
		m := maps.Clone(e.dst.m[i])
		if m == nil {
			m = make(map[string]V)
		}
		e.dst.m[i] = m
		e.copied[i] = true
	}
	return e.dst.m[i]
}

func (e *shardEdit[V]) get(k string) (V, bool) { return e.dst.get(k) }
func (e *shardEdit[V]) set(k string, v V)      { e.shard(k)[k] = v }
func (e *shardEdit[V]) del(k string)           { delete(e.shard(k), k) }
func (e *shardEdit[V]) done() *shardMap[V]     { return e.dst }
