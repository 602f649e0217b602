package keystoretest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"coffer/internal/keystore"
)

// Upstream is what the suite needs of an upstream under test: a real server
// or a fake that speaks the upstream's wire protocol.
type Upstream interface {
	// Name is the upstream name the Keystore was opened with.
	Name() string
	// Open returns a Keystore configured against the upstream, with the
	// given size cap. The harness closes it at the end of the test.
	Open(t *testing.T, maxValueSize int) keystore.Keystore
	// Item maps a simple name (lower-case letters, digits, '-') to an item
	// in the upstream's terms ("a-1" → "suite/a-1", "Safe/a-1", ...).
	Item(name string) string
	// Put creates item, or adds a new version, with a JSON object value
	// holding fields: exactly the bytes of JSON(fields) for upstreams whose
	// items are strings.
	Put(t *testing.T, item string, fields map[string]string)
	// Delete deletes item as an operator would.
	Delete(t *testing.T, item string)
}

// Optional capabilities of an Upstream harness; the suite runs the tests
// that need them when they are there.
type (
	// RawPutter stores a value that is not a JSON object.
	RawPutter interface {
		PutRaw(t *testing.T, item string, value []byte)
	}
	// Disabler disables, destroys or otherwise withdraws item, so that it
	// reads as gone (ErrDisabled or ErrNotFound).
	Disabler interface {
		Disable(t *testing.T, item string)
	}
	// AccessBreaker makes the upstream reject Coffer's credentials, and
	// accept them again.
	AccessBreaker interface {
		BreakAccess(t *testing.T)
		RestoreAccess(t *testing.T)
	}
	// Outage makes the upstream unreachable, and reachable again.
	Outage interface {
		Down(t *testing.T)
		Up(t *testing.T)
	}
	// BadItems lists item names that ValidateItem must refuse.
	BadItems interface {
		BadItems() []string
	}
)

// JSON is the canonical form of a JSON-shaped item: keys sorted, compact,
// no HTML escaping.
func JSON(fields map[string]string) []byte {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range sortedFieldKeys(fields) {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(keystore.AppendQuote(nil, []byte(k)))
		b.WriteByte(':')
		b.Write(keystore.AppendQuote(nil, []byte(fields[k])))
	}
	b.WriteByte('}')
	return b.Bytes()
}

// ManyItems is how many items the paging test creates: more than one page
// of every upstream's listing as the fakes serve it.
const ManyItems = 60

// Run runs the conformance suite against u.
func Run(t *testing.T, u Upstream) {
	s := &suite{u: u, tag: randHex(4)}
	ks := u.Open(t, keystore.DefaultMaxValueSize)
	t.Run("ReadAndPick", func(t *testing.T) { s.readAndPick(t, ks) })
	t.Run("VersionChanges", func(t *testing.T) { s.versionChanges(t, ks) })
	t.Run("NotFound", func(t *testing.T) { s.notFound(t, ks) })
	t.Run("Deleted", func(t *testing.T) { s.deleted(t, ks) })
	t.Run("TooLarge", func(t *testing.T) { s.tooLarge(t) })
	t.Run("ManyItems", func(t *testing.T) { s.manyItems(t, ks) })
	t.Run("Cancelled", func(t *testing.T) { s.cancelled(t, ks) })
	t.Run("Concurrent", func(t *testing.T) { s.concurrent(t, ks) })
	t.Run("ValidateItem", func(t *testing.T) { s.validateItem(t, ks) })
	if r, ok := u.(RawPutter); ok {
		t.Run("Raw", func(t *testing.T) { s.raw(t, ks, r) })
	}
	if d, ok := u.(Disabler); ok {
		t.Run("Disabled", func(t *testing.T) { s.disabled(t, ks, d) })
	}
	if a, ok := u.(AccessBreaker); ok {
		t.Run("AccessLost", func(t *testing.T) { s.accessLost(t, ks, a) })
	}
	if o, ok := u.(Outage); ok {
		t.Run("Unreachable", func(t *testing.T) { s.unreachable(t, ks, o) })
	}
}

type suite struct {
	u   Upstream
	tag string // keeps items of one run apart from another's on a shared server

	mu     sync.Mutex
	values [][]byte // every value put, none of which may appear in an error
}

func (s *suite) item(name string) string { return s.u.Item(s.tag + "-" + name) }

// fields returns a JSON object's fields with marked values, remembered so
// that errors can be checked for them.
func (s *suite) fields(keys ...string) map[string]string {
	f := map[string]string{}
	for _, k := range keys {
		v := "MARKER-" + randHex(8)
		f[k] = v
		s.remember([]byte(v))
	}
	return f
}

func (s *suite) remember(v []byte) {
	s.mu.Lock()
	s.values = append(s.values, bytes.Clone(v))
	s.mu.Unlock()
}

func (s *suite) put(t *testing.T, item string, keys ...string) map[string]string {
	t.Helper()
	f := s.fields(keys...)
	s.u.Put(t, item, f)
	return f
}

// checkErr fails unless err is an *Error for item that wraps want and
// contains no value.
func (s *suite) checkErr(t *testing.T, err error, item string, want ...error) {
	t.Helper()
	if err == nil {
		t.Fatalf("item %s: no error, want %v", item, want)
	}
	ok := false
	for _, w := range want {
		ok = ok || errors.Is(err, w)
	}
	if !ok {
		t.Fatalf("item %s: err = %v, want one of %v", item, err, want)
	}
	var ke *keystore.Error
	if !errors.As(err, &ke) {
		t.Errorf("err %v is not a *keystore.Error", err)
	} else if ke.Upstream != s.u.Name() || (item != "" && ke.Item != item) {
		t.Errorf("err names upstream %q item %q, want %q %q", ke.Upstream, ke.Item, s.u.Name(), item)
	}
	s.noValue(t, err)
}

func (s *suite) noValue(t *testing.T, err error) {
	t.Helper()
	msg := fmt.Sprintf("%v %+v %#v", err, err, err)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range s.values {
		if strings.Contains(msg, string(v)) || strings.Contains(msg, hex.EncodeToString(v)) {
			t.Fatalf("error reveals a value: %s", msg)
		}
	}
	if strings.Contains(msg, "MARKER-") {
		t.Fatalf("error reveals a value: %s", msg)
	}
}

func (s *suite) read(t *testing.T, ks keystore.Keystore, item string) keystore.Item {
	t.Helper()
	it, err := ks.Read(context.Background(), item)
	if err != nil {
		s.noValue(t, err)
		t.Fatalf("Read(%s): %v", item, err)
	}
	if it.Version == "" {
		t.Fatalf("Read(%s): empty version", item)
	}
	return it
}

func (s *suite) check(t *testing.T, ks keystore.Keystore, items ...string) map[string]keystore.State {
	t.Helper()
	st, err := ks.Check(context.Background(), items)
	if err != nil {
		s.noValue(t, err)
		t.Fatalf("Check(%d items): %v", len(items), err)
	}
	for _, it := range items {
		if _, ok := st[it]; !ok {
			t.Fatalf("Check: no state for %s", it)
		}
		if st[it].Err != nil {
			s.noValue(t, st[it].Err)
		}
	}
	return st
}

func (s *suite) readAndPick(t *testing.T, ks keystore.Keystore) {
	item := s.item("read")
	f := s.put(t, item, "username", "password")
	it := s.read(t, ks, item)
	if want := JSON(f); !bytes.Equal(it.Value, want) {
		t.Errorf("Read value is %d bytes, want the %d of the canonical JSON object put", len(it.Value), len(want))
	}
	it.Value.Zero()
	ref := keystore.Ref{Upstream: s.u.Name(), Item: item, Key: "password"}
	got, err := keystore.Fetch(context.Background(), ks, ref)
	if err != nil {
		t.Fatalf("Fetch %s: %v", ref, err)
	}
	if string(got.Value) != f["password"] {
		t.Errorf("Fetch %s: wrong value (%d bytes)", ref, len(got.Value))
	}
	if got.Version != it.Version {
		t.Errorf("Fetch version %q, Read version %q", got.Version, it.Version)
	}
	ref.Key = "nope"
	_, err = keystore.Fetch(context.Background(), ks, ref)
	s.checkErr(t, err, item, keystore.ErrNoKey)
	if !keystore.Gone(err) {
		t.Errorf("missing key is not Gone: %v", err)
	}
	if st := s.check(t, ks, item); st[item].Err != nil || st[item].Version != it.Version {
		t.Errorf("Check = %+v, want version %q", st[item], it.Version)
	}
}

func (s *suite) versionChanges(t *testing.T, ks keystore.Keystore) {
	a, b := s.item("change-a"), s.item("change-b")
	s.put(t, a, "v")
	s.put(t, b, "v")
	va, vb := s.read(t, ks, a).Version, s.read(t, ks, b).Version
	st := s.check(t, ks, a, b)
	if st[a].Version != va || st[b].Version != vb {
		t.Fatalf("Check before change = %+v, want %q and %q", st, va, vb)
	}
	f := s.put(t, a, "v")
	st = s.check(t, ks, a, b)
	if st[a].Version == va {
		t.Errorf("Check after a new value: version still %q", va)
	}
	if st[b].Version != vb {
		t.Errorf("Check: unchanged item's version moved from %q to %q", vb, st[b].Version)
	}
	it := s.read(t, ks, a)
	if !bytes.Equal(it.Value, JSON(f)) {
		t.Error("Read after a new value returns the old one")
	}
	if it.Version != st[a].Version {
		t.Errorf("Read version %q, Check version %q", it.Version, st[a].Version)
	}
	if again := s.check(t, ks, a, b); again[a].Version != st[a].Version || again[b].Version != vb {
		t.Errorf("two Checks without a change disagree: %+v then %+v", st, again)
	}
}

func (s *suite) notFound(t *testing.T, ks keystore.Keystore) {
	missing, there := s.item("never-made"), s.item("there")
	s.put(t, there, "v")
	_, err := ks.Read(context.Background(), missing)
	s.checkErr(t, err, missing, keystore.ErrNotFound)
	if !keystore.Gone(err) {
		t.Errorf("not found is not Gone")
	}
	st := s.check(t, ks, missing, there)
	s.checkErr(t, st[missing].Err, missing, keystore.ErrNotFound)
	if st[there].Err != nil || st[there].Version == "" {
		t.Errorf("existing item in the same Check: %+v", st[there])
	}
	if st, err := ks.Check(context.Background(), nil); err != nil || len(st) != 0 {
		t.Errorf("Check(no items) = %v, %v", st, err)
	}
}

func (s *suite) deleted(t *testing.T, ks keystore.Keystore) {
	item := s.item("deleted")
	s.put(t, item, "v")
	s.read(t, ks, item)
	s.u.Delete(t, item)
	_, err := ks.Read(context.Background(), item)
	s.checkErr(t, err, item, keystore.ErrNotFound, keystore.ErrDisabled)
	st := s.check(t, ks, item)
	s.checkErr(t, st[item].Err, item, keystore.ErrNotFound, keystore.ErrDisabled)
}

func (s *suite) tooLarge(t *testing.T) {
	const limit = 512
	small := s.u.Open(t, limit)
	fit, over := s.item("fits"), s.item("over")
	// {"v":"..."} is 8 bytes more than the value.
	fv := "MARKER-" + strings.Repeat("f", limit-8-7)
	ov := "MARKER-" + strings.Repeat("o", limit-8-7+1)
	s.remember([]byte(fv))
	s.remember([]byte(ov))
	s.u.Put(t, fit, map[string]string{"v": fv})
	s.u.Put(t, over, map[string]string{"v": ov})
	if it := s.read(t, small, fit); len(it.Value) != limit {
		t.Errorf("value at the cap: %d bytes, want %d", len(it.Value), limit)
	}
	_, err := small.Read(context.Background(), over)
	s.checkErr(t, err, over, keystore.ErrTooLarge)
	if keystore.Gone(err) {
		t.Error("too large is Gone; it must keep the last value")
	}
	if st := s.check(t, small, fit, over); st[fit].Err != nil {
		t.Errorf("Check of an item at the cap: %v", st[fit].Err)
	}
}

func (s *suite) manyItems(t *testing.T, ks keystore.Keystore) {
	items := make([]string, ManyItems)
	for i := range items {
		items[i] = s.item(fmt.Sprintf("many-%02d", i))
		s.put(t, items[i], "v")
	}
	st := s.check(t, ks, items...)
	for _, item := range items {
		if v := s.read(t, ks, item).Version; st[item].Err != nil || st[item].Version != v {
			t.Errorf("%s: Check %+v, Read version %q", item, st[item], v)
		}
	}
}

func (s *suite) cancelled(t *testing.T, ks keystore.Keystore) {
	item := s.item("cancelled")
	s.put(t, item, "v")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := ks.Read(ctx, item)
	if err == nil || keystore.Gone(err) {
		t.Errorf("Read with a cancelled context: %v; want an error that is not Gone", err)
	}
	st, err := ks.Check(ctx, []string{item})
	if err == nil && (st[item].Err == nil || keystore.Gone(st[item].Err)) {
		t.Errorf("Check with a cancelled context: %+v; want an error that is not Gone", st[item])
	}
	if err != nil && keystore.Gone(err) {
		t.Errorf("Check with a cancelled context: %v is Gone", err)
	}
}

func (s *suite) concurrent(t *testing.T, ks keystore.Keystore) {
	item := s.item("concurrent")
	s.put(t, item, "v")
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 5 {
				if it, err := ks.Read(context.Background(), item); err != nil {
					t.Error(err)
				} else {
					it.Value.Zero()
				}
				if _, err := ks.Check(context.Background(), []string{item}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
}

func (s *suite) validateItem(t *testing.T, ks keystore.Keystore) {
	if err := ks.ValidateItem(s.item("valid")); err != nil {
		t.Errorf("ValidateItem(%s): %v", s.item("valid"), err)
	}
	for _, bad := range append([]string{""}, badItems(s.u)...) {
		if err := ks.ValidateItem(bad); !errors.Is(err, keystore.ErrInvalidRef) {
			t.Errorf("ValidateItem(%q) = %v, want ErrInvalidRef", bad, err)
		}
	}
}

func badItems(u Upstream) []string {
	if b, ok := u.(BadItems); ok {
		return b.BadItems()
	}
	return nil
}

func (s *suite) raw(t *testing.T, ks keystore.Keystore, r RawPutter) {
	item := s.item("raw")
	v := []byte("MARKER-" + randHex(8) + "\x00\xff not json")
	if _, text := r.(UTF8Only); text {
		v = []byte("MARKER-" + randHex(8) + " not json {")
	}
	s.remember(v)
	r.PutRaw(t, item, v)
	it := s.read(t, ks, item)
	if !bytes.Equal(it.Value, v) {
		t.Errorf("raw value: %d bytes back, want %d", len(it.Value), len(v))
	}
	_, err := keystore.Fetch(context.Background(), ks, keystore.Ref{Upstream: s.u.Name(), Item: item, Key: "k"})
	s.checkErr(t, err, item, keystore.ErrNoKey)
}

// UTF8Only marks a RawPutter whose upstream holds text only.
type UTF8Only interface{ UTF8Only() }

func (s *suite) disabled(t *testing.T, ks keystore.Keystore, d Disabler) {
	item := s.item("disabled")
	s.put(t, item, "v")
	s.read(t, ks, item)
	d.Disable(t, item)
	_, err := ks.Read(context.Background(), item)
	s.checkErr(t, err, item, keystore.ErrDisabled, keystore.ErrNotFound)
	st := s.check(t, ks, item)
	s.checkErr(t, st[item].Err, item, keystore.ErrDisabled, keystore.ErrNotFound)
}

func (s *suite) accessLost(t *testing.T, ks keystore.Keystore, a AccessBreaker) {
	item := s.item("access")
	s.put(t, item, "v")
	s.read(t, ks, item)
	a.BreakAccess(t)
	restored := false
	defer func() {
		if !restored {
			a.RestoreAccess(t)
		}
	}()
	_, err := ks.Read(context.Background(), item)
	s.checkErr(t, err, item, keystore.ErrAccessLost)
	st, err := ks.Check(context.Background(), []string{item})
	if err != nil {
		s.checkErr(t, err, "", keystore.ErrAccessLost)
	} else {
		s.checkErr(t, st[item].Err, item, keystore.ErrAccessLost)
	}
	a.RestoreAccess(t)
	restored = true
	waitRead(t, ks, item)
}

func (s *suite) unreachable(t *testing.T, ks keystore.Keystore, o Outage) {
	item := s.item("outage")
	s.put(t, item, "v")
	s.read(t, ks, item)
	o.Down(t)
	up := false
	defer func() {
		if !up {
			o.Up(t)
		}
	}()
	_, err := ks.Read(context.Background(), item)
	s.checkErr(t, err, item, keystore.ErrUnreachable)
	if keystore.Gone(err) {
		t.Error("unreachable is Gone")
	}
	st, err := ks.Check(context.Background(), []string{item})
	if err != nil {
		s.checkErr(t, err, "", keystore.ErrUnreachable)
	} else {
		s.checkErr(t, st[item].Err, item, keystore.ErrUnreachable)
	}
	o.Up(t)
	up = true
	waitRead(t, ks, item)
}

// waitRead waits (bounded) until item reads again after a restored upstream.
func waitRead(t *testing.T, ks keystore.Keystore, item string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		it, err := ks.Read(context.Background(), item)
		if err == nil {
			it.Value.Zero()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Read(%s) after the upstream was restored: %v", item, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func sortedFieldKeys(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }
