package cli_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"coffer/internal/directory/ldap/ldaptest"
	"coffer/test/testkit"
)

// person runs the coffer CLI as a person at a terminal-less shell: the
// server's address and CA in the environment, no token there, the config
// and session files under home.
type person struct {
	s    *testkit.Server
	home string
	env  []string // extra
}

func (p person) run(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(testkit.Bin(t, "coffer"), args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "COFFER_") && !strings.HasPrefix(kv, "XDG_CONFIG_HOME=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "COFFER_ADDR=https://"+p.s.Addr, "COFFER_CACERT="+p.s.CA, "XDG_CONFIG_HOME="+p.home)
	cmd.Env = append(cmd.Env, p.env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// TestLoginE2E: coffer-server with the ldap: section of the issue against
// a real slapd; coffer login, whoami, a write as the person, logout; the
// session file's place and mode; precedence of COFFER_TOKEN; the directory
// going down.
func TestLoginE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds and runs binaries")
	}
	dir := ldaptest.Start(t)
	work := t.TempDir()
	conf := filepath.Join(work, "server.yaml")
	yaml := fmt.Sprintf(`ldap:
  url: %s
  insecure: true
  bind_dn: %s
  bind_password_file: %s
  user_base: %s
  user_filter: (uid={user})
  group_base: %s
  group_filter: (member={dn})
  groups:
    %s: {role: operator, scope: "payments/*"}
    %s: {role: auditor}
`, dir.URL, ldaptest.AdminDN, dir.BindPasswordFile, ldaptest.People, ldaptest.GroupsBase, ldaptest.PaymentsOps, ldaptest.Auditors)
	if err := os.WriteFile(conf, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	s := testkit.StartServer(t, filepath.Join(work, "data"), "--config", conf)
	p := person{s: s, home: filepath.Join(work, "home")}

	// No token anywhere yet.
	if _, errOut, code := p.run(t, "", "whoami"); code != 2 || !strings.Contains(errOut, "no token") {
		t.Fatalf("whoami before login: %d %s", code, errOut)
	}
	// Without a terminal the prompt is refused: --password-stdin says how.
	if _, errOut, code := p.run(t, "", "login", "--username", "alice"); code != 2 || !strings.Contains(errOut, "--password-stdin") {
		t.Fatalf("login without a terminal: %d %s", code, errOut)
	}
	// At a terminal (a pty from util-linux's script), the password is
	// prompted for and not echoed.
	if scriptBin, err := exec.LookPath("script"); err == nil {
		cmd := exec.Command(scriptBin, "-qec", testkit.Bin(t, "coffer")+" login --username carol", "/dev/null")
		cmd.Env = append(os.Environ(), "COFFER_ADDR=https://"+s.Addr, "COFFER_CACERT="+s.CA, "XDG_CONFIG_HOME="+p.home)
		// The password is typed only once the prompt is up (echo is off
		// from then on; what is typed earlier, a terminal echoes).
		stdin, typed := io.Pipe()
		cmd.Stdin = stdin
		var buf syncBuffer
		cmd.Stdout, cmd.Stderr = &buf, &buf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitOutput(t, &buf, "Password for carol:")
		time.Sleep(100 * time.Millisecond) // the prompt is printed just before echo goes off
		io.WriteString(typed, ldaptest.Password("carol")+"\n")
		waitOutput(t, &buf, "Logged in as")
		typed.Close() // exec's stdin copy ends: Wait can return
		err := cmd.Wait()
		out := buf.String()
		if err != nil || !strings.Contains(out, "Password for carol:") || !strings.Contains(out, "Logged in as ldap:carol") {
			t.Fatalf("login at a terminal: %v\n%s", err, out)
		}
		if strings.Contains(out, ldaptest.Password("carol")) {
			t.Fatalf("the password was echoed:\n%s", out)
		}
		p.run(t, "", "logout")
	} else {
		t.Log("no util-linux script: the terminal prompt is not tested")
	}
	if _, errOut, code := p.run(t, "wrong\n", "login", "--username", "alice", "--password-stdin"); code != 4 || !strings.Contains(errOut, "invalid username or password") {
		t.Fatalf("wrong password: %d %s", code, errOut)
	}
	out, errOut, code := p.run(t, ldaptest.Password("alice")+"\n", "login", "--username", "alice", "--password-stdin")
	if code != 0 || !strings.Contains(out, "Logged in as ldap:alice") || !strings.Contains(out, "operator on payments/*") {
		t.Fatalf("login: %d %s %s", code, out, errOut)
	}
	path := filepath.Join(p.home, "coffer", "token")
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("session file: %v %v", fi, err)
	}
	if strings.Contains(out, "coffer_") {
		t.Error("login printed the token")
	}
	out, _, code = p.run(t, "", "whoami")
	if code != 0 || !strings.Contains(out, "ldap:alice") || !strings.Contains(out, "login session of ldap:alice") || !strings.Contains(out, "auditor on all names") {
		t.Fatalf("whoami: %d %s", code, out)
	}
	if _, errOut, code := p.run(t, "v1", "secret", "put", "payments/db"); code != 0 {
		t.Fatalf("put as alice: %d %s", code, errOut)
	}
	if _, _, code := p.run(t, "v1", "secret", "put", "web/db"); code != 4 {
		t.Fatalf("put outside alice's scope: %d", code)
	}
	out = s.MustCLI(t, "", "audit", "ls", "--secret", "payments/db", "-o", "json")
	if !strings.Contains(out, `"actor": "ldap:alice"`) {
		t.Fatalf("audit names %s", out)
	}
	if out := s.MustCLI(t, "", "token", "ls"); !strings.Contains(out, "login session of ldap:alice") {
		t.Errorf("token ls does not show alice's session:\n%s", out)
	}
	// COFFER_TOKEN wins over the session.
	admin := person{s: s, home: p.home, env: []string{"COFFER_TOKEN=" + s.Token}}
	if out, _, _ := admin.run(t, "", "whoami"); !strings.Contains(out, "token:") || strings.Contains(out, "ldap:alice") {
		t.Fatalf("whoami with COFFER_TOKEN: %s", out)
	}
	// The session is for this server only: another address never gets it.
	other := person{s: &testkit.Server{Addr: "127.0.0.2:1", CA: s.CA}, home: p.home}
	if _, errOut, code := other.run(t, "", "whoami"); code != 2 || !strings.Contains(errOut, "no token") {
		t.Fatalf("another server: %d %s", code, errOut)
	}
	// A new login ends the session it replaces in the file.
	b, _ := os.ReadFile(path)
	aliceTok := strings.SplitN(string(b), "\n", 2)[0]
	// -o json: the answer without the token.
	out, _, code = p.run(t, ldaptest.Password("carol")+"\n", "login", "--username", "carol", "--password-stdin", "-o", "json")
	var ans map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &ans) != nil || ans["user"] != "ldap:carol" || ans["token"] != nil {
		t.Fatalf("login -o json: %d %s", code, out)
	}
	oldAlice := person{s: s, home: p.home, env: []string{"COFFER_TOKEN=" + aliceTok}}
	if _, _, code := oldAlice.run(t, "", "whoami"); code != 4 {
		t.Errorf("alice's replaced session still works: exit %d", code)
	}

	// The directory goes down: logins fail with the reason, the session works.
	dir.Stop()
	if _, errOut, code := p.run(t, ldaptest.Password("alice")+"\n", "login", "--username", "alice", "--password-stdin"); code != 1 || !strings.Contains(errOut, "HTTP 503") {
		t.Fatalf("login while the directory is down: %d %s", code, errOut)
	}
	if out, _, code := p.run(t, "", "whoami"); code != 0 || !strings.Contains(out, "ldap:carol") {
		t.Fatalf("whoami while the directory is down: %d %s", code, out)
	}

	// Logout revokes it on the server and removes the file.
	b, _ = os.ReadFile(path)
	tok := strings.SplitN(string(b), "\n", 2)[0]
	if out, errOut, code := p.run(t, "", "logout"); code != 0 || !strings.Contains(out, "Logged out ldap:carol") {
		t.Fatalf("logout: %d %s %s", code, out, errOut)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("session file after logout: %v", err)
	}
	revoked := person{s: s, home: p.home, env: []string{"COFFER_TOKEN=" + tok}}
	if _, _, code := revoked.run(t, "", "whoami"); code != 4 {
		t.Fatalf("the session token after logout: exit %d", code)
	}
	if _, errOut, code := p.run(t, "", "logout"); code != 2 || !strings.Contains(errOut, "not logged in") {
		t.Fatalf("second logout: %d %s", code, errOut)
	}
	for _, u := range ldaptest.Users {
		assertAbsent(t, u.Password, s.Logs(), s.DataDir)
	}
}
