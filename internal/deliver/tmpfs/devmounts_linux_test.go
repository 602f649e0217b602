package tmpfs

import (
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/moby/sys/mountinfo"
)

// hostTable is a synthetic mountinfo of a Kubernetes node running pods
// pods: per pod a sandbox shm, its projected-token and secret tmpfs
// volumes, and overlay roots and bind mounts of its containers, most with
// propagation peers, and some paths with escaped spaces. Device 0:(100+i)
// is pod i's secret volume, each mounted once.
func hostTable(pods int) string {
	var b strings.Builder
	b.WriteString("22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw\n")
	b.WriteString("23 22 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw\n")
	b.WriteString("24 22 0:22 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw\n")
	b.WriteString("25 22 0:5 / /dev rw,nosuid shared:3 - devtmpfs udev rw,size=8139880k,nr_inodes=2034970,mode=755\n")
	b.WriteString("26 25 0:23 / /dev/shm rw,nosuid,nodev shared:4 - tmpfs tmpfs rw\n")
	b.WriteString("27 22 0:24 / /run rw,nosuid,nodev,noexec,relatime shared:5 - tmpfs tmpfs rw,size=1631740k,mode=755\n")
	id := 100
	for i := range pods {
		uid := fmt.Sprintf("%08x-1f2e-4d3c-8b7a-%012x", i*7919, i*104729)
		sandbox := fmt.Sprintf("%064x", i*15485863+1)
		lines := []string{
			fmt.Sprintf("0:%d / /run/containerd/io.containerd.grpc.v1.cri/sandboxes/%s/shm rw,nosuid,nodev,noexec,relatime shared:%d - tmpfs shm rw,size=65536k", 3000+i, sandbox, 1000+i),
			fmt.Sprintf("0:%d / /run/containerd/io.containerd.runtime.v2.task/k8s.io/%s/rootfs rw,relatime shared:%d - overlay overlay rw,lowerdir=/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/%d/fs,upperdir=/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/%d/fs,workdir=/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/%d/work", 4000+i, sandbox, 2000+i, i*3, i*3+1, i*3+1),
			fmt.Sprintf("0:%d / /var/lib/kubelet/pods/%s/volumes/kubernetes.io~projected/kube-api-access-%05d rw,relatime shared:%d - tmpfs tmpfs rw,size=262144k", 5000+i, uid, i, 3000+i),
			fmt.Sprintf("0:%d / /var/lib/kubelet/pods/%s/volumes/kubernetes.io~secret/app\\040secrets rw,relatime shared:%d - tmpfs tmpfs rw,size=262144k", 100+i, uid, 4000+i),
			fmt.Sprintf("259:2 /var/lib/kubelet/pods/%s/etc-hosts /var/lib/kubelet/pods/%s/containers/app/%d rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw", uid, uid, i),
			fmt.Sprintf("0:%d / /run/containerd/io.containerd.runtime.v2.task/k8s.io/%064x/rootfs rw,relatime shared:%d master:%d - overlay overlay rw,lowerdir=/var/lib/containerd/snapshots/%d/fs", 6000+i, i*49979687+3, 5000+i, 6000+i, i),
		}
		for _, l := range lines {
			for range 2 { // two containers a pod, each line twice
				fmt.Fprintf(&b, "%d 27 %s\n", id, l)
				id++
			}
		}
	}
	return b.String()
}

// checkSameAsFull fails unless mountsOfDevice(mi) gives exactly what the
// full parse does, and returns it.
func checkSameAsFull(t testing.TB, mi string, major, minor int) []*mountinfo.Info {
	t.Helper()
	want, wantErr := fullMountsOfDevice([]byte(mi), major, minor)
	got, err := mountsOfDevice([]byte(mi), major, minor)
	if fmt.Sprint(err) != fmt.Sprint(wantErr) {
		t.Fatalf("mountsOfDevice(%d:%d) error = %v, full parse: %v\ntable:\n%q", major, minor, err, wantErr, mi)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("mountsOfDevice(%d:%d) = %s, full parse: %s\ntable:\n%q", major, minor, dump(got), dump(want), mi)
	}
	return got
}

func dump(ms []*mountinfo.Info) string {
	if ms == nil {
		return "nil"
	}
	var s []string
	for _, m := range ms {
		s = append(s, fmt.Sprintf("%+v", *m))
	}
	return "[" + strings.Join(s, ", ") + "]"
}

func TestMountsOfDeviceEqualsFullParse(t *testing.T) {
	const (
		root = "22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw\n"
		shm  = "26 22 0:23 / /dev/shm rw,nosuid,nodev shared:4 - tmpfs tmpfs rw\n"
	)
	cases := []struct {
		name         string
		mi           string
		major, minor int
		want         []string // the mount points found
		wantErr      bool
	}{
		{name: "empty table", mi: "", major: 0, minor: 12},
		{name: "no such device", mi: root + shm, major: 0, minor: 12},
		{name: "one match", mi: root + shm, major: 0, minor: 23, want: []string{"/dev/shm"}},
		{name: "match on the last line without a newline", mi: root + strings.TrimSuffix(shm, "\n"), major: 0, minor: 23, want: []string{"/dev/shm"}},
		{name: "CRLF line", mi: root + strings.TrimSuffix(shm, "\n") + "\r\n", major: 0, minor: 23, want: []string{"/dev/shm"}},
		{name: "carriage returns kept but one", mi: root + "26 22 0:23 / /dev/shm rw - tmpfs tmpfs rw\r\r\n", major: 0, minor: 23, want: []string{"/dev/shm"}},
		{
			name: "escaped spaces, tabs, newlines and backslashes in paths",
			mi: root + `30 22 0:12 /a\040b /run/my\040secrets\011x\012y\134z rw shared:9 - tmpfs my\040tmpfs rw` + "\n" +
				`31 22 0:13 / /other\040dir rw - tmpfs tmpfs rw` + "\n",
			major: 0, minor: 12, want: []string{"/run/my secrets\tx\ny\\z"},
		},
		{
			name: "optional fields, several or none",
			mi: root + "30 22 0:12 / /a rw shared:9 master:3 propagate_from:2 unbindable - tmpfs tmpfs rw\n" +
				"31 22 0:12 / /b rw - tmpfs tmpfs rw\n" + "32 22 0:12 / /c rw master:1 - tmpfs tmpfs rw\n",
			major: 0, minor: 12, want: []string{"/a", "/b", "/c"},
		},
		{
			name: "near-miss device numbers",
			mi: root + "30 22 10:123 / /a rw - tmpfs tmpfs rw\n" + "31 22 0:123 / /b rw - tmpfs tmpfs rw\n" +
				"32 22 0:1 / /c rw - tmpfs tmpfs rw\n" + "33 22 10:12 / /d rw - tmpfs tmpfs rw\n" +
				"34 22 0:120 / /e rw - tmpfs tmpfs rw\n" + "35 22 1:12 / /f rw - tmpfs tmpfs rw\n" +
				"36 22 0:12 / /real rw - tmpfs tmpfs rw\n" + "37 22 00:2 / /g rw - tmpfs tmpfs rw\n",
			major: 0, minor: 12, want: []string{"/real"},
		},
		{
			name: "the device in other fields",
			mi: root + "30 22 0:99 /0:12 /0:12 rw - tmpfs 0:12 rw\n" + "31 22 0:98 / /x\\0400:12\\040y rw 0:12 - tmpfs tmpfs rw\n" +
				"0:12 22 0:97 / /y rw - tmpfs tmpfs rw\n" + "32 0:12 0:96 / /z rw - tmpfs tmpfs 0:12\n" +
				"33 22 0:12 / /real rw - tmpfs tmpfs rw\n",
			major: 0, minor: 12, want: []string{"/real"},
		},
		{
			name: "other spellings of the same numbers",
			mi: root + "30 22 00:12 / /a rw - tmpfs tmpfs rw\n" + "31 22 0:012 / /b rw - tmpfs tmpfs rw\n" +
				"32 22 +0:+12 / /c rw - tmpfs tmpfs rw\n" + "33 22 -0:12 / /d rw - tmpfs tmpfs rw\n" +
				"34 22 0:0000000000000012 / /e rw - tmpfs tmpfs rw\n",
			major: 0, minor: 12, want: []string{"/a", "/b", "/c", "/d", "/e"},
		},
		{
			name: "unparsable numbers read as 0",
			mi: root + "30 22 x:y / /a rw - tmpfs tmpfs rw\n" + "31 22 0:12:3 / /b rw - tmpfs tmpfs rw\n" +
				"32 22 : / /c rw - tmpfs tmpfs rw\n" + "33 22 0:0 / /d rw - tmpfs tmpfs rw\n",
			major: 0, minor: 0, want: []string{"/a", "/b", "/c", "/d"},
		},
		{
			name:  "numbers too large for an int",
			mi:    root + "30 22 99999999999999999999:12 / /a rw - tmpfs tmpfs rw\n" + "31 22 9223372036854775807:12 / /b rw - tmpfs tmpfs rw\n",
			major: math.MaxInt64, minor: 12, want: []string{"/a", "/b"},
		},
		{name: "a ten-digit minor", mi: root + "30 22 0:4294967296 / /a rw - tmpfs tmpfs rw\n", major: 0, minor: 4294967296, want: []string{"/a"}},
		{name: "negative wanted", mi: root + "30 22 -1:-2 / /a rw - tmpfs tmpfs rw\n" + "31 22 1:2 / /b rw - tmpfs tmpfs rw\n", major: -1, minor: -2, want: []string{"/a"}},
		{name: "separator found further left", mi: root + "30 22 0:12 / /a rw - tmpfs tmpfs rw - x y\n", major: 0, minor: 12, want: []string{"/a"}},
		{name: "double space makes an empty field", mi: root + "30 22 0:12 / /a rw  - tmpfs tmpfs rw\n", major: 0, minor: 12, want: []string{"/a"}},

		// A malformed line anywhere fails the whole check, as before, even
		// one that is not of the device.
		{name: "too few fields elsewhere", mi: root + "30 22 0:99 / /a rw - tmpfs tmpfs\n" + shm, major: 0, minor: 23, wantErr: true},
		{name: "no separator elsewhere", mi: root + "30 22 0:99 / /a rw x tmpfs tmpfs rw\n" + shm, major: 0, minor: 23, wantErr: true},
		{name: "separator too far right", mi: root + "30 22 0:99 / /a rw x y - tmpfs rw\n" + shm, major: 0, minor: 23, wantErr: true},
		{name: "device without a colon elsewhere", mi: root + "30 22 099 / /a rw - tmpfs tmpfs rw\n" + shm, major: 0, minor: 23, wantErr: true},
		{name: "empty line", mi: root + "\n" + shm, major: 0, minor: 23, wantErr: true},
		{name: "line too long for the library", mi: root + "30 22 0:99 / /" + strings.Repeat("a", 70000) + " rw - tmpfs tmpfs rw\n" + shm, major: 0, minor: 23, wantErr: true},
		{name: "long line the library still reads", mi: root + "30 22 0:99 / /" + strings.Repeat("a", 40000) + " rw - tmpfs tmpfs rw\n" + shm, major: 0, minor: 23, want: []string{"/dev/shm"}},
		{name: "malformed line of the device", mi: root + "30 22 0:23 / /a rw tmpfs tmpfs rw\n", major: 0, minor: 23, wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := checkSameAsFull(t, tc.mi, tc.major, tc.minor)
			_, err := fullMountsOfDevice([]byte(tc.mi), tc.major, tc.minor)
			if (err != nil) != tc.wantErr {
				t.Fatalf("error = %v, want an error: %v", err, tc.wantErr)
			}
			var points []string
			for _, m := range got {
				points = append(points, m.Mountpoint)
			}
			if !reflect.DeepEqual(points, tc.want) {
				t.Fatalf("mount points = %q, want %q", points, tc.want)
			}
		})
	}
}

func TestMountsOfDeviceHostTable(t *testing.T) {
	mi := hostTable(110)
	if n := strings.Count(mi, "\n"); n < 1300 {
		t.Fatalf("table of %d lines", n)
	}
	for _, dev := range [][2]int{{0, 100}, {0, 209}, {0, 23}, {259, 2}, {0, 3005}, {0, 12}, {0, 1}, {0, 10}, {25, 9}} {
		checkSameAsFull(t, mi, dev[0], dev[1])
	}
	if got := checkSameAsFull(t, mi, 0, 105); len(got) != 2 || !strings.HasSuffix(got[0].Mountpoint, "/app secrets") {
		t.Fatalf("mounts of pod 5's secret volume: %s", dump(got))
	}
	// The table is read without falling back to parsing every line.
	allocs := testing.AllocsPerRun(10, func() {
		if _, err := mountsOfDevice([]byte(mi), 0, 105); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 20 {
		t.Fatalf("%.0f allocations to find one device in %d lines: every line parsed?", allocs, strings.Count(mi, "\n"))
	}
}

func FuzzMountsOfDevice(f *testing.F) {
	f.Add([]byte("22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/root rw\n26 22 0:23 / /dev/shm rw shared:4 - tmpfs tmpfs rw\n"), 0, 23)
	f.Add([]byte("30 22 0:12 /a\\040b /run/my\\040secrets rw shared:9 master:3 - tmpfs my\\040tmpfs rw\r\n31 22 10:123 / /0:12 rw - tmpfs 0:12 rw"), 0, 12)
	f.Add([]byte("30 22 00:12 / /a rw - tmpfs tmpfs rw\n31 22 +0:12:3 / /b rw - x y - tmpfs tmpfs rw\n32 22 x:y / /c rw  - tmpfs tmpfs rw\n"), 0, 0)
	f.Add([]byte("30 22 0:99 / /a rw tmpfs tmpfs rw\n\n26 22 0:23 / /dev/shm rw - tmpfs tmpfs rw\n"), 0, 23)
	f.Add([]byte("30 22 99999999999999999999:1 / /a rw - tmpfs tmpfs rw\n"), math.MaxInt64, 1)
	f.Add([]byte(hostTable(3)), 0, 101)
	f.Fuzz(func(t *testing.T, mi []byte, major, minor int) {
		checkSameAsFull(t, string(mi), major, minor)
	})
}

// BenchmarkMountsOfDevice finds a tmpfs's mounts in the mountinfo of a node
// running 110 pods, as otherNamespaces does for each namespace it reads:
// full parses every line then filters (as before); filtered parses only the
// lines of the device.
func BenchmarkMountsOfDevice(b *testing.B) {
	mi := []byte(hostTable(110))
	for _, bc := range []struct {
		name string
		fn   func([]byte, int, int) ([]*mountinfo.Info, error)
	}{{"full", fullMountsOfDevice}, {"filtered", mountsOfDevice}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(mi)))
			for b.Loop() {
				ms, err := bc.fn(mi, 0, 105)
				if err != nil || len(ms) != 2 {
					b.Fatalf("%d mounts, %v", len(ms), err)
				}
			}
		})
	}
}
