package tmpfs

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var goodID = strings.Repeat("ab12", 16)

func TestRequestRoundTrip(t *testing.T) {
	in := &request{
		ID: 7, ContainerID: goodID, PID: 4242, Dir: "/run/secrets", SizeBytes: 1 << 20,
		Files: []wireFile{
			{Secret: "app/db", Version: 3, Name: "db", Mode: 0o400, UID: 1000, GID: 1001, Value: []byte("s3cr\x00t")},
			{Secret: "app/empty", Version: 1, Name: "empty", Mode: 0o440, Value: []byte{}},
		},
	}
	frame, err := encodeRequest(in)
	if err != nil {
		t.Fatal(err)
	}
	if len(frame) != cap(frame) {
		t.Fatalf("frame len %d cap %d: a reallocation would leave an unzeroed copy of the values", len(frame), cap(frame))
	}
	payload, err := readFrame(bytes.NewReader(frame))
	if err != nil {
		t.Fatal(err)
	}
	out, err := decodeRequest(payload)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip:\n in %+v\nout %+v", in, out)
	}
	// Values alias the payload: zeroing it zeroes them.
	clear(payload)
	if !bytes.Equal(out.Files[0].Value, make([]byte, 6)) {
		t.Fatal("values do not alias the payload")
	}
}

func TestResponseRoundTrip(t *testing.T) {
	in := &response{ID: 9, Code: codeNoSwap, Flags: flagMounted | flagNoSwapFallback, Written: 3, Removed: 1, Message: "why"}
	payload, err := readFrame(bytes.NewReader(encodeResponse(in)))
	if err != nil {
		t.Fatal(err)
	}
	out, err := decodeResponse(payload)
	if err != nil || !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip: %+v, %v", out, err)
	}
}

func TestDecodeRejectsMalformed(t *testing.T) {
	frame, _ := encodeRequest(&request{ID: 1, ContainerID: goodID, PID: 2, Dir: "/d", SizeBytes: 4096,
		Files: []wireFile{{Name: "a", Value: []byte("v")}}})
	payload := frame[4:]
	for name, p := range map[string][]byte{
		"empty":     nil,
		"truncated": payload[:len(payload)-1],
		"trailing":  append(append([]byte{}, payload...), 0),
		"version":   append([]byte{9}, payload[1:]...),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := decodeRequest(p); !errors.Is(err, errProtocol) {
				t.Fatalf("err = %v, want errProtocol", err)
			}
		})
	}
	huge := []byte{0xff, 0xff, 0xff, 0xff}
	if _, err := readFrame(bytes.NewReader(huge)); !errors.Is(err, errProtocol) {
		t.Fatalf("oversized frame: %v", err)
	}
}

func FuzzDecodeRequest(f *testing.F) {
	frame, _ := encodeRequest(&request{ID: 1, ContainerID: goodID, PID: 2, Dir: "/run/secrets", SizeBytes: 4096,
		Files: []wireFile{{Secret: "s", Version: 1, Name: "a", Mode: 0o400, Value: []byte("v")}}})
	f.Add(frame[4:])
	f.Add([]byte{protoVersion})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, payload []byte) {
		r, err := decodeRequest(payload)
		if err != nil {
			return
		}
		again, err := encodeRequest(r)
		if err != nil {
			return // e.g. a file count the encoder refuses
		}
		if !bytes.Equal(again[4:], payload) {
			t.Fatalf("re-encoding differs")
		}
		_ = validateRequest(r) // must not panic
	})
}

func FuzzDecodeResponse(f *testing.F) {
	f.Add(encodeResponse(&response{ID: 1, Message: "m"})[4:])
	f.Fuzz(func(t *testing.T, payload []byte) {
		if r, err := decodeResponse(payload); err == nil {
			if !bytes.Equal(encodeResponse(r)[4:], payload) && len(r.Message) <= 4096 {
				t.Fatalf("re-encoding differs")
			}
		}
	})
}

func TestManifest(t *testing.T) {
	in := map[string]entry{
		"db":  {Name: "db", Secret: "app/db", Version: 2, Mode: 0o400, UID: 1000, GID: 1000},
		"api": {Name: "api", Secret: "app/api", Version: 1, Mode: 0o440},
	}
	b := encodeManifest(in)
	out, err := parseManifest(b)
	if err != nil || !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip: %v %v", out, err)
	}
	if !strings.HasPrefix(string(b), `{"v":1,"files":[{"name":"api"`) {
		t.Fatalf("not sorted: %s", b)
	}
	for name, bad := range map[string]string{
		"not json":     "{",
		"version":      `{"v":2,"files":[]}`,
		"escape":       `{"v":1,"files":[{"name":"../etc/passwd"}]}`,
		"hidden":       `{"v":1,"files":[{"name":".coffer"}]}`,
		"slash":        `{"v":1,"files":[{"name":"a/b"}]}`,
		"duplicate":    `{"v":1,"files":[{"name":"a"},{"name":"a"}]}`,
		"wrong type":   `{"v":1,"files":[{"name":1}]}`,
		"negative uid": `{"v":1,"files":[{"name":"a","uid":-1}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := parseManifest([]byte(bad)); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func FuzzParseManifest(f *testing.F) {
	f.Add(encodeManifest(map[string]entry{"db": {Name: "db", Secret: "app/db", Version: 1, Mode: 0o400}}))
	f.Add([]byte(`{"v":1,"files":[{"name":"../x"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseManifest(b)
		if err != nil {
			return
		}
		for name, e := range m {
			if name != e.Name || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." || strings.HasPrefix(name, ".") {
				t.Fatalf("unsafe name accepted: %q", name)
			}
		}
		again, err := parseManifest(encodeManifest(m))
		if err != nil || !reflect.DeepEqual(m, again) {
			t.Fatalf("re-encoding differs: %v", err)
		}
	})
}

func TestNoswapDecision(t *testing.T) {
	for _, tc := range []struct {
		supported, swapOn bool
		fallback          bool
		code              uint8 // 0: no error
	}{
		{supported: true, swapOn: true},
		{supported: true, swapOn: false},
		{supported: false, swapOn: false, fallback: true},
		{supported: false, swapOn: true, code: codeNoSwap},
	} {
		fallback, err := noswapDecision(tc.supported, tc.swapOn)
		var ce *codedError
		switch {
		case tc.code == 0 && err != nil, tc.code != 0 && (!errors.As(err, &ce) || ce.code != tc.code), fallback != tc.fallback:
			t.Errorf("noswapDecision(%v, %v) = %v, %v", tc.supported, tc.swapOn, fallback, err)
		}
	}
}

func TestSwapActive(t *testing.T) {
	header := "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
	if swapActive([]byte(header)) {
		t.Error("header only: swap reported on")
	}
	if !swapActive([]byte(header + "/swapfile file 1048572 0 -2\n")) {
		t.Error("one area: swap reported off")
	}
}

func TestValidateRequest(t *testing.T) {
	ok := func() *request {
		return &request{ContainerID: goodID, PID: 100, Dir: "/run/secrets", SizeBytes: 4096,
			Files: []wireFile{{Name: "db", Mode: 0o400, Value: []byte("v")}}}
	}
	if err := validateRequest(ok()); err != nil {
		t.Fatal(err)
	}
	for name, mutate := range map[string]func(*request){
		"short id":      func(r *request) { r.ContainerID = "abc" },
		"id with slash": func(r *request) { r.ContainerID = goodID + "/x" },
		"pid 0":         func(r *request) { r.PID = 0 },
		"pid 1":         func(r *request) { r.PID = 1 },
		"relative dir":  func(r *request) { r.Dir = "run/secrets" },
		"dotdot dir":    func(r *request) { r.Dir = "/run/../etc" },
		"root dir":      func(r *request) { r.Dir = "/" },
		"unclean dir":   func(r *request) { r.Dir = "/run//secrets" },
		"small size":    func(r *request) { r.SizeBytes = 100 },
		"bad name":      func(r *request) { r.Files[0].Name = "../x" },
		"hidden name":   func(r *request) { r.Files[0].Name = ".coffer" },
		"setuid mode":   func(r *request) { r.Files[0].Mode = 0o4755 },
		"duplicate":     func(r *request) { r.Files = append(r.Files, r.Files[0]) },
		"too big":       func(r *request) { r.Files[0].Value = make([]byte, 5000) },
	} {
		t.Run(name, func(t *testing.T) {
			r := ok()
			mutate(r)
			if err := validateRequest(r); !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	c := Config{}
	if err := c.setDefaults(); err != nil {
		t.Fatal(err)
	}
	if c.Dir != DefaultDir || c.SizeBytes != DefaultSizeBytes || c.Exe != "/proc/self/exe" || c.Logger == nil {
		t.Fatalf("defaults: %+v", c)
	}
	for _, bad := range []Config{{Dir: "relative"}, {SizeBytes: 10}, {Exe: "/nonexistent/coffer"}} {
		if err := bad.setDefaults(); err == nil {
			t.Errorf("accepted %+v", bad)
		}
	}
}

func TestKeyedMutexSerializesPerKey(t *testing.T) {
	var k keyedMutex
	var inA, maxA atomic.Int32
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			unlock := k.lock("a")
			if n := inA.Add(1); n > maxA.Load() {
				maxA.Store(n)
			}
			time.Sleep(time.Millisecond)
			inA.Add(-1)
			unlock()
		}()
		go func() {
			defer wg.Done()
			k.lock("b")()
		}()
	}
	wg.Wait()
	if maxA.Load() != 1 {
		t.Fatalf("%d holders of one key at once", maxA.Load())
	}
	if len(k.m) != 0 {
		t.Fatalf("keys not forgotten: %d", len(k.m))
	}
}

func TestHasOption(t *testing.T) {
	if !hasOption("rw,noswap,size=4096k", "noswap") || hasOption("rw,noswapx", "noswap") || hasOption("", "noswap") {
		t.Fatal("hasOption")
	}
}
