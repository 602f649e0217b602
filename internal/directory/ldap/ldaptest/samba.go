package ldaptest

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Samba AD domain of StartSamba.
const (
	ADRealm    = "CORP.COFFER.TEST"
	ADBase     = "DC=corp,DC=coffer,DC=test"
	ADUsers    = "CN=Users," + ADBase
	ADAdminDN  = "CN=Administrator," + ADUsers
	ADAdminPW  = "Adm1n-Passw0rd!"
	ADUsersGrp = "CN=coffer-users," + ADUsers    // mapped: viewer
	ADAdmins   = "CN=coffer-admins," + ADUsers   // not mapped; a member of coffer-users
	ADPayments = "CN=coffer-payments," + ADUsers // mapped: operator on payments/
)

// ADUser is an account of StartSamba: alice is in coffer-admins (so in
// coffer-users only through nesting), bob in coffer-payments, eve is
// disabled.
var ADAccounts = []User{
	{Name: "alice", Password: "Al1ce-Passw0rd!", Groups: []string{ADAdmins}},
	{Name: "bob", Password: "B0b-Passw0rd!!", Groups: []string{ADPayments}},
	{Name: "eve", Password: "Ev3-Passw0rd!!", Groups: []string{ADPayments}, Locked: true},
}

// Samba is a running Samba AD domain controller, LDAP service only.
type Samba struct {
	URL              string // ldap://127.0.0.1 (port 389; Samba's ports are fixed)
	BindPasswordFile string // holds ADAdminPW
	Dir              string
	cmd              *exec.Cmd
	done             chan struct{}
}

// StartSamba provisions a Samba AD domain in a temporary directory and
// runs its LDAP service on 127.0.0.1:389/636/3268 (it needs root for those
// ports). Without Debian's samba, samba-ad-dc and samba-ad-provision, or
// without root, the test is skipped, or fails under COFFER_REQUIRE_TOOLS=1.
func StartSamba(t testing.TB) *Samba {
	t.Helper()
	why := ""
	for _, b := range []string{"/usr/sbin/samba", "/usr/bin/samba-tool"} {
		if _, err := os.Stat(b); err != nil {
			why = "Samba AD is not installed (apt-get install samba samba-ad-dc samba-ad-provision): " + err.Error()
		}
	}
	if why == "" && os.Getuid() != 0 {
		why = "Samba AD needs root (it binds 127.0.0.1:389)"
	}
	if why == "" {
		if c, err := net.DialTimeout("tcp", "127.0.0.1:389", time.Second); err == nil {
			c.Close()
			why = "127.0.0.1:389 is taken: another LDAP server runs here"
		}
	}
	if why != "" {
		if os.Getenv("COFFER_REQUIRE_TOOLS") == "1" {
			t.Fatal(why)
		}
		t.Skip(why)
	}
	dir, err := os.MkdirTemp("", "coffer-samba-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args[:3], " "), err, out)
		}
	}
	run("samba-tool", "domain", "provision", "--targetdir="+dir, "--realm="+ADRealm, "--domain=CORP",
		"--server-role=dc", "--dns-backend=NONE", "--adminpass="+ADAdminPW, "--host-name=dc1",
		"--option=interfaces=127.0.0.1", "--option=bind interfaces only=yes", "--option=server services=ldap")
	conf := filepath.Join(dir, "etc", "smb.conf")
	b, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	// Plain LDAP simple binds for the test (AD refuses them by default),
	// and everything Samba writes in dir.
	extra := "\tldap server require strong auth = no\n\tpid directory = " + dir + "\n\tlog file = " + dir + "/log.%m\n"
	b = bytes.Replace(b, []byte("[global]\n"), []byte("[global]\n"+extra), 1)
	b = bytes.ReplaceAll(b, []byte("\tlog file = /var/log/samba/log.%m\n"), nil)
	if err := os.WriteFile(conf, b, 0o600); err != nil {
		t.Fatal(err)
	}
	s := &Samba{URL: "ldap://127.0.0.1", Dir: dir, BindPasswordFile: filepath.Join(dir, "bind-password")}
	if err := os.WriteFile(s.BindPasswordFile, []byte(ADAdminPW+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	log, err := os.Create(filepath.Join(dir, "samba.out"))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd := exec.Command("/usr/sbin/samba", "-i", "-s", conf, "--debug-stdout")
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its workers are stopped with it
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.cmd, s.done = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(s.done) }()
	t.Cleanup(s.Stop)
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", "127.0.0.1:389", time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-s.done:
			out, _ := os.ReadFile(filepath.Join(dir, "samba.out"))
			t.Fatalf("samba exited at start:\n%s", out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("samba did not listen on 127.0.0.1:389 within 30s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	tool := func(args ...string) { run(append(append([]string{"samba-tool"}, args...), "-s", conf)...) }
	tool("group", "add", "coffer-users")
	tool("group", "add", "coffer-admins")
	tool("group", "add", "coffer-payments")
	tool("group", "addmembers", "coffer-users", "coffer-admins")
	for _, u := range ADAccounts {
		tool("user", "add", u.Name, u.Password)
		for _, g := range u.Groups {
			cn := strings.TrimPrefix(strings.Split(g, ",")[0], "CN=")
			tool("group", "addmembers", cn, u.Name)
		}
		if u.Locked {
			tool("user", "disable", u.Name)
		}
	}
	return s
}

// Stop stops Samba and its workers (its process group).
func (s *Samba) Stop() {
	if s.cmd == nil {
		return
	}
	syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
	}
	s.cmd = nil
}
