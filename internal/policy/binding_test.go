package policy

import (
	"errors"
	"strings"
	"testing"

	"coffer/internal/secret"
)

func TestNormalizeDefaults(t *testing.T) {
	tests := []struct {
		name string
		in   Binding
		want Binding
	}{
		{
			name: "minimal",
			in:   Binding{Name: "web-db", Secret: "payments/db-password", Selector: "app=web"},
			want: Binding{Name: "web-db", Secret: "payments/db-password", Selector: "app=web", File: "db-password", Mode: 0o400},
		},
		{
			name: "top-level secret",
			in:   Binding{Name: "b", Secret: "token", Selector: "app"},
			want: Binding{Name: "b", Secret: "token", Selector: "app", File: "token", Mode: 0o400},
		},
		{
			name: "everything given",
			in: Binding{Name: "team/b", Secret: "a/b/c", Selector: "env in (prod, staging), app==web", Image: "busybox:1",
				File: "Config.JSON", Mode: 0o440, UID: 1000, GID: MaxID},
			want: Binding{Name: "team/b", Secret: "a/b/c", Selector: "app=web,env in (prod,staging)", Image: "docker.io/library/busybox:1",
				File: "Config.JSON", Mode: 0o440, UID: 1000, GID: MaxID},
		},
		{
			name: "owner read is enough",
			in:   Binding{Name: "b", Secret: "s", Selector: "a", Mode: 0o400},
			want: Binding{Name: "b", Secret: "s", Selector: "a", File: "s", Mode: 0o400},
		},
		{
			name: "all permission bits",
			in:   Binding{Name: "b", Secret: "s", Selector: "a", Mode: 0o777},
			want: Binding{Name: "b", Secret: "s", Selector: "a", File: "s", Mode: 0o777},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.in
			if err := b.Normalize(); err != nil {
				t.Fatal(err)
			}
			if b != tt.want {
				t.Errorf("got  %+v\nwant %+v", b, tt.want)
			}
			again := b
			if err := again.Normalize(); err != nil || again != b {
				t.Errorf("re-normalize: %+v, %v", again, err)
			}
		})
	}
}

func TestNormalizeInvalid(t *testing.T) {
	ok := Binding{Name: "b", Secret: "s", Selector: "app=web"}
	with := func(f func(*Binding)) Binding { b := ok; f(&b); return b }
	tests := []struct {
		name string
		in   Binding
		msg  string
		also error // another sentinel the error wraps, if any
	}{
		{"empty name", with(func(b *Binding) { b.Name = "" }), "invalid binding: name: invalid name: empty", secret.ErrInvalidName},
		{"bad name", with(func(b *Binding) { b.Name = "Web" }), `invalid binding: name: invalid name "Web"`, secret.ErrInvalidName},
		{"long name", with(func(b *Binding) { b.Name = strings.Repeat("a", 257) }), "longer than 256 bytes", secret.ErrInvalidName},
		{"empty secret", with(func(b *Binding) { b.Secret = "" }), `invalid binding "b": secret: invalid name: empty`, secret.ErrInvalidName},
		{"bad secret", with(func(b *Binding) { b.Secret = "a//b" }), `invalid binding "b": secret: invalid name "a//b"`, secret.ErrInvalidName},
		{"empty selector", with(func(b *Binding) { b.Selector = "" }), `invalid binding "b": selector "": no requirement: an empty selector would match every container`, nil},
		{"bad selector", with(func(b *Binding) { b.Selector = "app=" + "x y" }), `invalid binding "b": selector "app=x y": found 'y'`, nil},
		{"gt selector", with(func(b *Binding) { b.Selector = "n>1" }), `selector "n>1": requirement "n>1": the operators '<' and '>' are not supported`, nil},
		{"bad image", with(func(b *Binding) { b.Image = "BusyBox" }), `invalid binding "b": image "BusyBox": repository "BusyBox": must be lower-case`, nil},
		{"bad digest", with(func(b *Binding) { b.Image = "sha256:12" }), `image "sha256:12": digest "sha256:12": want "sha256:" followed by exactly 64 hex digits`, nil},
		{"file with slash", with(func(b *Binding) { b.File = "a/b" }), `invalid binding "b": file: invalid name: file name "a/b"`, secret.ErrInvalidName},
		{"file dotdot", with(func(b *Binding) { b.File = ".." }), `file name ".."`, secret.ErrInvalidName},
		{"hidden file", with(func(b *Binding) { b.File = ".env" }), `file name ".env"`, secret.ErrInvalidName},
		{"mode with type bits", with(func(b *Binding) { b.Mode = 0o100400 }), `invalid binding "b": mode 0o100400: only permission bits (0o000..0o777) are allowed`, nil},
		{"setuid mode", with(func(b *Binding) { b.Mode = 0o4400 }), "mode 0o4400: only permission bits", nil},
		{"unreadable mode", with(func(b *Binding) { b.Mode = 0o044 }), `invalid binding "b": mode 0o44: the owner must be able to read the file (add 0o400)`, nil},
		{"write-only mode", with(func(b *Binding) { b.Mode = 0o200 }), "the owner must be able to read", nil},
		{"negative uid", with(func(b *Binding) { b.UID = -1 }), `invalid binding "b": uid -1: must be between 0 and 2147483647`, nil},
		{"huge uid", with(func(b *Binding) { b.UID = MaxID + 1 }), "uid 2147483648: must be between 0 and 2147483647", nil},
		{"negative gid", with(func(b *Binding) { b.GID = -5 }), `invalid binding "b": gid -5: must be between 0 and 2147483647`, nil},
		{"huge gid", with(func(b *Binding) { b.GID = 1 << 40 }), "gid 1099511627776: must be between 0", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.in
			err := b.Normalize()
			if err == nil {
				t.Fatalf("no error for %+v", tt.in)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			if tt.also != nil && !errors.Is(err, tt.also) {
				t.Errorf("error %v does not wrap %v", err, tt.also)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q\ndoes not say %q", err, tt.msg)
			}
			if b != tt.in {
				t.Errorf("Normalize changed the binding on error: %+v", b)
			}
		})
	}
}
