package runcwrap

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	const id = "3a46abbfcff07ad803561ebc082c98bb4d62080e92b3b8f756987de644a25759"
	for name, tc := range map[string]struct {
		args    []string
		want    Call
		wantErr string
	}{
		"docker's create": {
			args: []string{"--root", "/run/docker/runtime-runc/moby", "--log", "/b/log.json", "--log-format", "json", "create", "--bundle", "/b", "--pid-file", "/b/init.pid", id},
			want: Call{Command: "create", Bundle: "/b", ID: id, Log: "/b/log.json", LogFormat: "json"},
		},
		"equals and single dashes": {
			args: []string{"-root=/r", "--log=/l", "-systemd-cgroup", "--debug", "create", "-b=/x/../b", "--no-pivot", "--console-socket", "/s", id},
			want: Call{Command: "create", Bundle: "/b", ID: id, Log: "/l"},
		},
		"option after the id": {
			args: []string{"create", id, "--bundle", "/b"},
			want: Call{Command: "create", Bundle: "/b", ID: id},
		},
		"relative bundle":                   {args: []string{"create", "-b", "rel", id}, want: Call{Command: "create", Bundle: "/cwd/rel", ID: id}},
		"default bundle":                    {args: []string{"create", id}, want: Call{Command: "create", Bundle: "/cwd", ID: id}},
		"start":                             {args: []string{"--root", "/r", "start", id}, want: Call{Command: "start"}},
		"exec":                              {args: []string{"--root", "/r", "exec", "--process", "/p.json", "--detach", id}, want: Call{Command: "exec"}},
		"kill":                              {args: []string{"kill", id, "9"}, want: Call{Command: "kill"}},
		"delete":                            {args: []string{"delete", "--force", id}, want: Call{Command: "delete"}},
		"version":                           {args: []string{"--version"}, want: Call{}},
		"none":                              {args: nil, want: Call{}},
		"a command named like a flag value": {args: []string{"--root", "create", "state", id}, want: Call{Command: "state"}},
		"unknown global":                    {args: []string{"--evil", "create", id}, wantErr: `unknown runc option "--evil"`},
		"missing value":                     {args: []string{"--root"}, wantErr: "missing its value"},
		"unknown create":                    {args: []string{"create", "--evil", id}, wantErr: `unknown runc create option "--evil"`},
		"two ids":                           {args: []string{"create", id, id}, wantErr: "want one container id, got 2"},
		"no id":                             {args: []string{"create", "--bundle", "/b"}, wantErr: "want one container id, got 0"},
		"bundle no value":                   {args: []string{"create", id, "--bundle"}, wantErr: "missing its value"},
		"too many":                          {args: make([]string, maxArgs+1), wantErr: "at most"},
		"ids after dashes":                  {args: []string{"create", "--", id}, want: Call{Command: "create", Bundle: "/cwd", ID: id}},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := Parse(tc.args, "/cwd")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add("--root\x00/r\x00--log\x00/l\x00create\x00--bundle\x00/b\x00id")
	f.Add("create\x00-b=x\x00id\x00--no-pivot")
	f.Add("--\x00create")
	f.Fuzz(func(t *testing.T, s string) {
		args := strings.Split(s, "\x00")
		c, err := Parse(args, "/cwd")
		if err != nil {
			return
		}
		if c.Create() && (c.ID == "" || !strings.HasPrefix(c.Bundle, "/")) {
			t.Fatalf("create without id or absolute bundle: %+v", c)
		}
	})
}
