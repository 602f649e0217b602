package main

import (
	"testing"

	"github.com/spf13/pflag"
)

func TestServerAddr(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:7443":                  "127.0.0.1:7443",
		"https://127.0.0.1:7443/":         "127.0.0.1:7443",
		"a:7443,https://b:7443, c:7443":   "a:7443,b:7443,c:7443",
		"https://coffer.example.com:7443": "coffer.example.com:7443",
	} {
		if got, err := serverAddr(in); err != nil || got != want {
			t.Errorf("serverAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "a", "a:1,", "https://a:1/x", "user@a:1"} {
		if _, err := serverAddr(bad); err == nil {
			t.Errorf("serverAddr(%q) accepted", bad)
		}
	}
}

func TestRuntimeFlags(t *testing.T) {
	for _, c := range []struct {
		runtime string
		set     []string // flags given on the command line
		ok      bool
	}{
		{"docker", nil, true},
		{"docker", []string{"docker-host"}, true},
		{"containerd", []string{"containerd-socket", "nri-socket", "node-name"}, true},
		{"docker", []string{"nri-socket"}, false},
		{"containerd", nil, true},
		{"docker", []string{"containerd-socket"}, false},
		{"docker", []string{"node-name"}, false},
		{"containerd", []string{"docker-host"}, false},
		{"containerd", []string{"hook-socket"}, true},
		{"docker", []string{"hook-socket"}, true}, // the runtime wrapper's socket (docker run --runtime coffer)
		{"cri-o", nil, false},
		{"", nil, false},
	} {
		f := pflag.NewFlagSet("t", pflag.ContinueOnError)
		for _, n := range []string{"docker-host", "containerd-socket", "nri-socket", "node-name", "hook-socket"} {
			f.String(n, "", "")
		}
		for _, n := range c.set {
			if err := f.Set(n, "x"); err != nil {
				t.Fatal(err)
			}
		}
		if err := checkRuntimeFlags(f, c.runtime); (err == nil) != c.ok {
			t.Errorf("--runtime %q with %v: err = %v, want ok %v", c.runtime, c.set, err, c.ok)
		}
	}
}

func TestCredential(t *testing.T) {
	flags := func(set ...string) *pflag.FlagSet {
		f := pflag.NewFlagSet("t", pflag.ContinueOnError)
		f.String("name", "host-1", "")
		for _, n := range set {
			f.Set(n, "node-a")
		}
		return f
	}
	if c, name, err := credential(flags(), "join", "", "host-1"); err != nil || c.JoinToken != "join" || name != "host-1" {
		t.Fatalf("join token: %+v %q %v", c, name, err)
	}
	// The host name of a pod is the pod's: the server names the agent.
	if c, name, err := credential(flags(), "", "/tok", "host-1"); err != nil || c.K8sTokenFile != "/tok" || name != "" {
		t.Fatalf("k8s token: %+v %q %v", c, name, err)
	}
	if _, name, err := credential(flags("name"), "", "/tok", "node-a"); err != nil || name != "node-a" {
		t.Fatalf("k8s token with --name: %q %v", name, err)
	}
	if _, _, err := credential(flags(), "join", "/tok", "host-1"); err == nil {
		t.Fatal("both credentials accepted")
	}
}
