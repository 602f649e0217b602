package cli_test

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"coffer/test/testkit"
)

// TestCLIBindHostsAndImageLabels drives bind create --hosts, bind ls and
// bind test --host-labels/--image-labels against a real coffer-server.
func TestCLIBindHostsAndImageLabels(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds and runs binaries")
	}
	s := testkit.StartServer(t, filepath.Join(t.TempDir(), "data"))
	s.MustCLI(t, "v", "secret", "put", "payments/db")
	s.MustCLI(t, "v", "secret", "put", "payments/img")

	out := s.MustCLI(t, "", "bind", "create", "prod-db", "--secret", "payments/db", "--selector", "app=web", "--hosts", "zone in (eu-2,eu-1),env==prod")
	if !strings.Contains(out, "on hosts with env=prod,zone in (eu-1,eu-2)") {
		t.Fatalf("bind create: %s", out)
	}
	s.MustCLI(t, "", "bind", "create", "pay-img", "--secret", "payments/img", "--selector", "image.label/app=payments", "--image", "registry.example.com/pay/*")

	ls := s.MustCLI(t, "", "bind", "ls")
	lines := strings.Split(strings.TrimSpace(ls), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "HOSTS") || !strings.Contains(lines[2], "env=prod,zone in (eu-1,eu-2)") ||
		!strings.Contains(lines[1], "image.label/app=payments") {
		t.Fatalf("bind ls:\n%s", ls)
	}
	var bs []map[string]any
	if err := json.Unmarshal([]byte(s.MustCLI(t, "", "bind", "ls", "-o", "json")), &bs); err != nil || len(bs) != 2 || bs[1]["hosts"] != "env=prod,zone in (eu-1,eu-2)" {
		t.Fatalf("bind ls -o json: %v %v", bs, err)
	}

	tests := []struct {
		args []string
		want []string // secrets granted
	}{
		{[]string{"--labels", "app=web", "--host-labels", "env=prod,zone=eu-1"}, []string{"payments/db"}},
		{[]string{"--labels", "app=web", "--host-labels", "env=dev,zone=eu-1"}, nil},
		{[]string{"--labels", "app=web,env=prod,zone=eu-1"}, nil},
		{[]string{"--image-labels", "app=payments", "--image", "registry.example.com/pay/api:1"}, []string{"payments/img"}},
		{[]string{"--labels", "image.label/app=payments", "--image", "registry.example.com/pay/api:1"}, nil},
		{[]string{"--image-labels", "app=payments", "--image", "evil.example.com/pay/api:1"}, nil},
	}
	for _, tt := range tests {
		var gs []map[string]any
		out := s.MustCLI(t, "", append([]string{"bind", "test", "-o", "json"}, tt.args...)...)
		if err := json.Unmarshal([]byte(out), &gs); err != nil {
			t.Fatalf("bind test %v: %v: %s", tt.args, err, out)
		}
		var got []string
		for _, g := range gs {
			got = append(got, g["secret"].(string))
		}
		if strings.Join(got, ",") != strings.Join(tt.want, ",") {
			t.Errorf("bind test %v: %v, want %v", tt.args, got, tt.want)
		}
	}

	// Bad input: usage errors (exit 2) naming the flag or field; nothing changes.
	for _, tt := range []struct {
		args []string
		says string
	}{
		{[]string{"bind", "test", "--host-labels", "env"}, `--host-labels: invalid labels: "env" is not key=value`},
		{[]string{"bind", "test", "--image-labels", "-x=y"}, `--image-labels: invalid labels: label key "-x"`},
		{[]string{"bind", "create", "x", "--secret", "payments/db", "--selector", "app=web", "--hosts", " "}, `hosts " ": no requirement`},
		{[]string{"bind", "create", "x", "--secret", "payments/db", "--selector", "image.label/app=x"}, `image "": the selector uses image.label/ keys`},
		{[]string{"bind", "create", "prod-db", "--secret", "payments/db", "--selector", "app=web", "--hosts", "image.label/app=x"}, "host selector cannot see"},
	} {
		_, errOut, code := s.CLI(t, "", tt.args...)
		if code != 2 || !strings.Contains(errOut, tt.says) {
			t.Errorf("coffer %v: exit %d, want 2 saying %s: %s", tt.args, code, tt.says, errOut)
		}
	}
	if after := s.MustCLI(t, "", "bind", "ls"); after != ls {
		t.Fatalf("bad input changed the bindings:\n%s\nwas\n%s", after, ls)
	}
}
