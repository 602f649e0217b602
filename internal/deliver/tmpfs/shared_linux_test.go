package tmpfs

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/moby/sys/mountinfo"
)

func TestSharedTmpfs(t *testing.T) {
	// As read in the container: --tmpfs, our own mount, a named volume.
	private := &mountinfo.Info{ID: 170, Major: 0, Minor: 71, Root: "/", Mountpoint: "/run/secrets", FSType: "tmpfs"}
	volume := &mountinfo.Info{ID: 91, Major: 0, Minor: 41, Root: "/", Mountpoint: "/run/secrets", FSType: "tmpfs", Optional: "master:3"}
	hostShm := &mountinfo.Info{ID: 205, Major: 0, Minor: 27, Root: "/", Mountpoint: "/run/secrets", FSType: "tmpfs"}
	host := nsMounts{who: "the host's mount namespace (pid 1)", mounts: []*mountinfo.Info{
		{Major: 0, Minor: 41, Mountpoint: "/var/lib/docker/volumes/v/_data", Optional: "shared:3"},
		{Major: 0, Minor: 27, Mountpoint: "/dev/shm"},
	}}
	cases := []struct {
		name   string
		target *mountinfo.Info
		others []nsMounts
		want   string // "" if private, else a part of the message
	}{
		{"private tmpfs", private, []nsMounts{host}, ""},
		{"private tmpfs, nothing else read", private, nil, ""},
		{"named volume, mounted on the host", volume, []nsMounts{host}, "mounted in the host's mount namespace (pid 1) at /var/lib/docker/volumes/v/_data"},
		{"named volume, seen by propagation only", volume, nil, "propagates with another mount namespace (master:3)"},
		{"bind of a host tmpfs", hostShm, []nsMounts{host}, "at /dev/shm"},
		{"shared peer", &mountinfo.Info{Major: 0, Minor: 99, Optional: "shared:7"}, nil, "(shared:7)"},
		{"same minor other major", &mountinfo.Info{Major: 8, Minor: 41}, []nsMounts{host}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := sharedTmpfs("/run/secrets", tc.target, tc.others)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused a private tmpfs: %v", err)
				}
				return
			}
			var se *sharedError
			var ce *codedError
			if !errors.As(err, &se) || !errors.As(err, &ce) || ce.code != codeShared {
				t.Fatalf("err = %#v, want a sharedError with codeShared", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.want) || !strings.HasPrefix(msg, "/run/secrets is a shared volume") ||
				!strings.HasSuffix(msg, "Coffer will not write secrets where other containers or the host can read them") {
				t.Fatalf("message = %q, want it to contain %q", msg, tc.want)
			}
		})
	}
}

func TestParsePPID(t *testing.T) {
	for _, tc := range []struct {
		stat string
		want int
		ok   bool
	}{
		{"4242 (sleep) S 4200 4242 4242 0 -1 4194560", 4200, true},
		{"7 (a) b) c (d) R 1 7 7", 1, true},
		{"1 (init) S 0 1 1", 0, true},
		{"9 (x y z) S", 0, false},
		{"no parenthesis S 1", 0, false},
		{"9 (x) S -3", 0, false},
		{"9 (x) S notanumber", 0, false},
		{"", 0, false},
	} {
		got, err := parsePPID([]byte(tc.stat))
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parsePPID(%q) = %d, %v; want %d, ok=%v", tc.stat, got, err, tc.want, tc.ok)
		}
	}
}

func FuzzParsePPID(f *testing.F) {
	f.Add([]byte("4242 (sleep) S 4200 4242 4242 0 -1"))
	f.Add([]byte("7 (a) b) S 1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ppid, err := parsePPID(b)
		if err != nil {
			return
		}
		if ppid < 0 || !strings.Contains(string(b), strconv.Itoa(ppid)) {
			t.Fatalf("parsePPID(%q) = %d", b, ppid)
		}
	})
}
