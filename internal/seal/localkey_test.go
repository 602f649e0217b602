package seal

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
)

func TestLoadKeyFile(t *testing.T) {
	dir := t.TempDir()
	good := bytes.Repeat([]byte{0x42}, KeySize)
	want, _ := NewLocalKey(good)
	for _, tc := range []struct {
		name    string
		content []byte // nil: no file
		mode    os.FileMode
		dir     bool
		wantErr string // "" for success
	}{
		{name: "0600", content: good, mode: 0o600},
		{name: "0400", content: good, mode: 0o400},
		{name: "missing", wantErr: "does not exist"},
		{name: "world readable", content: good, mode: 0o644, wantErr: "chmod 600"},
		{name: "group readable", content: good, mode: 0o640, wantErr: "chmod 600"},
		{name: "world writable only", content: good, mode: 0o602, wantErr: "chmod 600"},
		{name: "empty", content: []byte{}, mode: 0o600, wantErr: "is 0 bytes"},
		{name: "31 bytes", content: good[:31], mode: 0o600, wantErr: "is 31 bytes"},
		{name: "33 bytes", content: append(bytes.Clone(good), '\n'), mode: 0o600, wantErr: "is 33 bytes"},
		{name: "directory", dir: true, wantErr: "not a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
			switch {
			case tc.dir:
				if err := os.Mkdir(path, 0o700); err != nil {
					t.Fatal(err)
				}
			case tc.content != nil:
				if err := os.WriteFile(path, tc.content, 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(path, tc.mode); err != nil {
					t.Fatal(err)
				}
			}
			k, err := LoadKeyFile(path)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				defer k.Close()
				if k.KeyID() != want.KeyID() {
					t.Errorf("KeyID = %s, want %s", k.KeyID(), want.KeyID())
				}
				return
			}
			if !errors.Is(err, ErrKeyFile) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want ErrKeyFile mentioning %q", err, tc.wantErr)
			}
			checkNoSecrets(t, err, good)
		})
	}
}

func TestCreateKeyFile(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sub", "master.key")
	k, err := CreateKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Size() != KeySize {
		t.Errorf("key file mode %v size %d, want 0600 and %d", fi.Mode().Perm(), fi.Size(), KeySize)
	}
	if di, _ := os.Stat(filepath.Dir(path)); di.Mode().Perm() != 0o700 {
		t.Errorf("created directory mode %v, want 0700", di.Mode().Perm())
	}
	before, _ := os.ReadFile(path)
	if bytes.Equal(before, make([]byte, KeySize)) {
		t.Error("key is all zeros")
	}

	// A value sealed with the created key opens with the key loaded back.
	aad := AAD("s", 1)
	env, err := Seal(ctx, k, []byte("v"), aad)
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer loaded.Close()
	if _, err := Open(ctx, loaded, env, aad); err != nil {
		t.Fatal(err)
	}

	// Never overwrites: neither the key just made nor any other file.
	if _, err := CreateKeyFile(path); !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Fatalf("second CreateKeyFile: err = %v, want fs.ErrExist", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatal("CreateKeyFile changed an existing key file")
	}
	other := filepath.Join(t.TempDir(), "other")
	os.WriteFile(other, []byte("not a key"), 0o644)
	if _, err := CreateKeyFile(other); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("CreateKeyFile over a file: err = %v, want fs.ErrExist", err)
	}
	if b, _ := os.ReadFile(other); string(b) != "not a key" {
		t.Fatal("CreateKeyFile changed an existing file")
	}
}

func TestCreateKeyFileIgnoresUmask(t *testing.T) {
	// A restrictive umask (no owner write) still yields mode 0600.
	old := syscall.Umask(0o277)
	defer syscall.Umask(old)
	path := filepath.Join(t.TempDir(), "k")
	k, err := CreateKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	k.Close()
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestNewLocalKey(t *testing.T) {
	raw := bytes.Repeat([]byte{1}, KeySize)
	k, err := NewLocalKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	id := k.KeyID()
	raw[0] = 2 // NewLocalKey copied the key
	if k.KeyID() != id || k.key[0] != 1 {
		t.Error("NewLocalKey did not copy the key")
	}
	if !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(id) {
		t.Errorf("KeyID %q is not 16 hex digits", id)
	}
	k2, _ := NewLocalKey(bytes.Repeat([]byte{1}, KeySize))
	if k2.KeyID() != id {
		t.Error("KeyID is not stable for the same key")
	}
	for _, n := range []int{0, 16, 31, 33, 64} {
		if _, err := NewLocalKey(make([]byte, n)); !errors.Is(err, ErrKeyFile) {
			t.Errorf("NewLocalKey(%d bytes): err = %v, want ErrKeyFile", n, err)
		}
	}
}

func TestClose(t *testing.T) {
	ctx := context.Background()
	k, _ := NewLocalKey(bytes.Repeat([]byte{3}, KeySize))
	env, _ := Seal(ctx, k, []byte("v"), nil)
	held := k.key
	k.Close()
	if !bytes.Equal(held, make([]byte, KeySize)) {
		t.Error("Close did not zero the key")
	}
	if _, err := k.Wrap(ctx, make([]byte, 32)); !errors.Is(err, ErrClosed) {
		t.Errorf("Wrap after Close: err = %v, want ErrClosed", err)
	}
	if _, err := Open(ctx, k, env, nil); !errors.Is(err, ErrDecrypt) || !errors.Is(err, ErrClosed) {
		t.Errorf("Open after Close: err = %v, want ErrDecrypt and ErrClosed", err)
	}
	if _, err := Seal(ctx, k, []byte("v"), nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Seal after Close: err = %v, want ErrClosed", err)
	}
	k.Close() // idempotent
}

func TestUnwrapRejectsBadFormat(t *testing.T) {
	ctx := context.Background()
	k := testKey(t, 11)
	w, _ := k.Wrap(ctx, make([]byte, 32))
	w[0] = 2
	if _, err := k.Unwrap(ctx, w); !errors.Is(err, ErrDecrypt) || !strings.Contains(err.Error(), "format 2") {
		t.Errorf("err = %v, want ErrDecrypt about the format", err)
	}
}
