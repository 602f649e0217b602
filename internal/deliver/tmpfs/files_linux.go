package tmpfs

import (
	"errors"
	"fmt"
	"maps"
	"strings"

	"golang.org/x/sys/unix"
)

// syncFiles makes the directory dirfd hold exactly req.Files, using and
// updating the manifest. Every operation is relative to dirfd and refuses
// symlinks: nothing the container planted can redirect a write.
func syncFiles(dirfd int, req *request, helperPID int, flags *uint8) (written, removed int, err error) {
	old, corrupt := readManifest(dirfd)
	if corrupt {
		*flags |= flagManifestCorrupt
	}
	if err := removeTemps(dirfd); err != nil {
		return 0, 0, err
	}
	next := make(map[string]entry, len(req.Files))
	for _, f := range req.Files {
		next[f.Name] = entry{Name: f.Name, Secret: f.Secret, Version: f.Version, Mode: f.Mode, UID: f.UID, GID: f.GID}
	}
	// List every name about to be created before creating it, so a crash
	// halfway leaves no file the manifest does not know.
	union := maps.Clone(old)
	grew := false
	for name, e := range next {
		if _, ok := union[name]; !ok {
			union[name] = e
			grew = true
		}
	}
	if grew {
		if err := writeManifest(dirfd, union, req.ID, helperPID); err != nil {
			return 0, 0, err
		}
	}

	for i, f := range req.Files {
		if o, ok := old[f.Name]; ok && o == next[f.Name] && fileMatches(dirfd, &f) {
			continue
		}
		tmp := fmt.Sprintf("%s%d-%d-%d", tmpPrefix, helperPID, req.ID, i)
		if err := writeFile(dirfd, tmp, &f); err != nil {
			return written, removed, err
		}
		written++
	}
	for name := range old {
		if _, keep := next[name]; keep {
			continue
		}
		if err := unix.Unlinkat(dirfd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return written, removed, fmt.Errorf("remove %s: %w", name, err)
		}
		removed++
	}
	if corrupt || !maps.Equal(old, next) {
		if err := writeManifest(dirfd, next, req.ID, helperPID); err != nil {
			return written, removed, err
		}
	}
	return written, removed, nil
}

// fileMatches reports whether name is still the regular file Coffer wrote:
// same mode, owner and size.
func fileMatches(dirfd int, f *wireFile) bool {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, f.Name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return false
	}
	return st.Mode&unix.S_IFMT == unix.S_IFREG && st.Mode&0o7777 == f.Mode &&
		st.Uid == f.UID && st.Gid == f.GID && st.Size == int64(len(f.Value))
}

// writeFile writes f under a temporary name and renames it over f.Name, so
// a reader sees the old value or the new one, never a mix.
func writeFile(dirfd int, tmp string, f *wireFile) (err error) {
	fd, err := unix.Openat(dirfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("create %s: %w", f.Name, err)
	}
	defer func() {
		if fd >= 0 {
			unix.Close(fd)
		}
		if err != nil {
			_ = unix.Unlinkat(dirfd, tmp, 0)
		}
	}()
	// Owner first: chown clears set-id bits, chmod sets the final mode.
	if err := unix.Fchown(fd, int(f.UID), int(f.GID)); err != nil {
		return fmt.Errorf("chown %s: %w", f.Name, err)
	}
	if err := unix.Fchmod(fd, f.Mode); err != nil {
		return fmt.Errorf("chmod %s: %w", f.Name, err)
	}
	if err := writeAll(fd, f.Value); err != nil {
		if errors.Is(err, unix.ENOSPC) {
			return fmt.Errorf("write %s: tmpfs full (raise the size cap): %w", f.Name, err)
		}
		return fmt.Errorf("write %s: %w", f.Name, err)
	}
	cerr := unix.Close(fd)
	fd = -1
	if cerr != nil {
		return fmt.Errorf("close %s: %w", f.Name, cerr)
	}
	if err := unix.Renameat(dirfd, tmp, dirfd, f.Name); err != nil {
		return fmt.Errorf("rename into %s: %w", f.Name, err)
	}
	return nil
}

func writeAll(fd int, p []byte) error {
	for len(p) > 0 {
		n, err := unix.Write(fd, p)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}

// readManifest returns the managed files; corrupt is true when a manifest
// exists but cannot be trusted (it is then treated as empty).
func readManifest(dirfd int) (entries map[string]entry, corrupt bool) {
	fd, err := unix.Openat(dirfd, manifestName, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if errors.Is(err, unix.ENOENT) {
		return map[string]entry{}, false
	}
	if err != nil {
		return map[string]entry{}, true
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Uid != 0 || st.Size > maxManifest {
		return map[string]entry{}, true
	}
	buf := make([]byte, st.Size)
	n, err := unix.Read(fd, buf)
	if err != nil || n != len(buf) {
		return map[string]entry{}, true
	}
	entries, err = parseManifest(buf)
	if err != nil {
		return map[string]entry{}, true
	}
	return entries, false
}

func writeManifest(dirfd int, entries map[string]entry, reqID uint64, helperPID int) error {
	tmp := fmt.Sprintf("%s%d-%d-manifest", tmpPrefix, helperPID, reqID)
	f := wireFile{Name: manifestName, Mode: 0o600, Value: encodeManifest(entries)}
	if err := writeFile(dirfd, tmp, &f); err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	return nil
}

// removeTemps deletes leftovers of interrupted writes.
func removeTemps(dirfd int) error {
	fd, err := unix.Openat(dirfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open directory: %w", err)
	}
	defer unix.Close(fd)
	buf := make([]byte, 8<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("list directory: %w", err)
		}
		if n == 0 {
			return nil
		}
		_, _, names := unix.ParseDirent(buf[:n], -1, nil)
		for _, name := range names {
			if strings.HasPrefix(name, tmpPrefix) {
				if err := unix.Unlinkat(dirfd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
					return fmt.Errorf("remove %s: %w", name, err)
				}
			}
		}
	}
}
