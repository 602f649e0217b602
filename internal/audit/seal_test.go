package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestSealerReused seals records one after the other with one sealer into
// one buffer, as a flush does, a refused record among them: the buffer must
// hold exactly the lines that fresh sealing of the good records gives, and
// they must verify as a trail.
func TestSealerReused(t *testing.T) {
	for _, key := range [][]byte{nil, bytes.Repeat([]byte{9}, KeySize)} {
		t.Run(fmt.Sprintf("mac=%v", key != nil), func(t *testing.T) {
			s := &sealer{key: key}
			var buf, want []byte
			var head, wantHead Head
			for i := range 20 {
				e, err := prepare(ev(i), time.Now)
				if err != nil {
					t.Fatal(err)
				}
				if i%7 == 3 {
					e.Details = map[string]string{"x": strings.Repeat("<", MaxRecordSize/6)}
				}
				if i%5 == 4 {
					e.Details = nil
				}
				fresh := e
				before := len(buf)
				var sealErr error
				buf, sealErr = s.seal(buf, &e, head)
				l, freshErr := sealRecord(&fresh, wantHead, key)
				if (sealErr != nil) != (freshErr != nil) {
					t.Fatalf("record %d: sealer %v, sealRecord %v", i, sealErr, freshErr)
				}
				if sealErr != nil {
					if !errors.Is(sealErr, ErrInvalidEvent) || len(buf) != before {
						t.Fatalf("record %d: refused with %v, buffer %d bytes, was %d", i, sealErr, len(buf), before)
					}
					continue
				}
				if e.Hash != fresh.Hash || e.MAC != fresh.MAC || (key != nil) != (e.MAC != "") {
					t.Fatalf("record %d: hash %s mac %s, sealRecord says %s %s", i, e.Hash, e.MAC, fresh.Hash, fresh.MAC)
				}
				if key != nil && e.MAC != recordMAC(key, e.Hash) {
					t.Fatalf("record %d: MAC is not recordMAC", i)
				}
				b, _ := canonical(&e)
				if e.Hash != chainHash(e.Prev, b) {
					t.Fatalf("record %d: hash is not chainHash", i)
				}
				want = append(want, l...)
				head, wantHead = Head{Seq: e.Seq, Hash: e.Hash}, Head{Seq: fresh.Seq, Hash: fresh.Hash}
			}
			if !bytes.Equal(buf, want) {
				t.Fatalf("reused sealer wrote\n%s\nfresh sealing wrote\n%s", buf, want)
			}
			o := VerifyOptions{End: &head, Key: key, MACFrom: 1}
			if h, err := VerifyWith(bytes.NewReader(buf), o); err != nil || h != head {
				t.Fatalf("VerifyWith = %v, %v", h, err)
			}
		})
	}
}

// TestFlushRefusesOneOfAGroup commits a group with a record too large for
// the trail in its middle, over several flushes that reuse the committer's
// buffer: the other records are written and chained, the large one is
// refused alone, and the file verifies.
func TestFlushRefusesOneOfAGroup(t *testing.T) {
	dir := t.TempDir()
	an := &memAnchor{}
	path := filepath.Join(dir, "audit.log")
	l, err := Open(path, Options{Anchor: an})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	block, held := make(chan struct{}), make(chan struct{})
	var once sync.Once
	sync0 := l.sync
	l.sync = func() error {
		once.Do(func() { close(held); <-block }) // hold the first group, so that the others queue up
		return sync0()
	}
	first := make(chan error, 1)
	go func() { _, err := l.Append(ctx, ev(0)); first <- err }()
	<-held
	var wg sync.WaitGroup
	errs := make([]error, 30)
	for i := range errs {
		wg.Go(func() {
			e := ev(i + 1)
			if i%10 == 5 {
				e.Details = map[string]string{"x": strings.Repeat("&", MaxRecordSize/6)}
			}
			_, errs[i] = l.Append(ctx, e)
		})
	}
	for l.queued() < len(errs) {
		time.Sleep(time.Millisecond)
	}
	close(block)
	wg.Wait()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	for i, err := range errs {
		if (i%10 == 5) != errors.Is(err, ErrInvalidEvent) || (i%10 != 5 && err != nil) {
			t.Fatalf("append %d: %v", i, err)
		}
	}
	// Once more, into the buffer the committer kept.
	if _, err := l.Append(ctx, ev(99)); err != nil {
		t.Fatal(err)
	}
	head := l.Head()
	if head.Seq != 1+27+1 {
		t.Fatalf("head %v, want seq 29", head)
	}
	if _, err := l.Verify(ctx, nil); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte(`\u0026\u0026`)) || bytes.Count(data, []byte("\n")) != 29 {
		t.Fatalf("the trail holds a refused record, or not 29 lines: %d bytes", len(data))
	}
	key, m, _ := an.Load(ctx)
	if h, err := VerifyWith(bytes.NewReader(data), VerifyOptions{End: &head, Key: key, MACFrom: m.MACFrom}); err != nil || h != head {
		t.Fatalf("VerifyWith = %v, %v", h, err)
	}
}

// queued is how many records wait for the committer.
func (l *Log) queued() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.queue)
}

// TestSealerMark checks that a sealer's Marks are sealMark's, one after the
// other and between records sealed with the same HMAC.
func TestSealerMark(t *testing.T) {
	key := bytes.Repeat([]byte{3}, KeySize)
	s := &sealer{key: key}
	heads := []Head{{}, {Seq: 1, Hash: strings.Repeat("a", 64)}, benchHead, {Seq: 1 << 40, Hash: strings.Repeat("0f", 32)}}
	for i, h := range heads {
		for _, from := range []uint64{0, 1, 7, h.Seq + 1} {
			got, want := s.sealMark(h, from), sealMark(key, h, from)
			if got != want {
				t.Fatalf("head %d from %d: sealer's Mark %+v, sealMark %+v", i, from, got, want)
			}
			if got.MAC != markMAC(key, got) {
				t.Fatalf("head %d: Mark's MAC is not markMAC", i)
			}
			e := deliveryEvent()
			if _, err := s.seal(nil, &e, h); err != nil || e.MAC != recordMAC(key, e.Hash) {
				t.Fatalf("record after a Mark: MAC %s, want recordMAC, err %v", e.MAC, err)
			}
		}
	}
}
