package scan

import (
	"encoding/base64"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
)

// rnd builds synthetic secret parts at run time, so no credential-looking
// literal sits in the source.
type rnd struct{ r *rand.Rand }

func newRnd() rnd { return rnd{rand.New(rand.NewPCG(7, 7))} }

func (g rnd) s(alphabet string, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[g.r.IntN(len(alphabet))]
	}
	return string(b)
}

const (
	an  = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	hx  = "0123456789abcdef"
	b64 = an + "+/"
	url = an + "-_"
	u32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
)

func (g rnd) pem(typ string) string {
	body := base64.StdEncoding.EncodeToString([]byte(g.s(an, 300)))
	var sb strings.Builder
	sb.WriteString("-----BEGIN " + typ + "-----\n")
	for len(body) > 64 {
		sb.WriteString(body[:64] + "\n")
		body = body[64:]
	}
	sb.WriteString(body + "\n-----END " + typ + "-----\n")
	return sb.String()
}

// TestRules checks one positive example per rule (and that the secret is
// redacted in the excerpt) and a set of negatives.
func TestRules(t *testing.T) {
	rs, err := LoadRules()
	if err != nil {
		t.Fatal(err)
	}
	g := newRnd()
	pw := "Zr" + g.s(an, 14)
	enc := base64.RawURLEncoding.EncodeToString
	jwt := enc([]byte(`{"alg":"RS256"}`)) + "." + enc([]byte(`{"sub":"svc","exp":1}`)) + "." + g.s(url, 40)
	auth := base64.StdEncoding.EncodeToString([]byte("bot:" + pw))
	positives := []struct {
		rule, path, text, secret string
	}{
		{"aws-access-key-id", "f", "id=AKIA" + g.s(u32, 16), ""},
		{"aws-secret-access-key", "f", "AWS_SECRET_ACCESS_KEY=" + g.s(b64, 40), ""},
		{"gcp-service-account", "sa.json", "{\n \"type\": \"service_account\",\n \"private_key\": \"" + strings.ReplaceAll(g.pem("PRIVATE KEY"), "\n", `\n`) + "\"\n}", ""},
		{"gcp-api-key", "f", "key: AIza" + g.s(url, 35), ""},
		{"gcp-oauth-client-secret", "f", "GOCSPX-" + g.s(url, 28), ""},
		{"azure-storage-key", "f", "DefaultEndpointsProtocol=https;AccountName=x;AccountKey=" + g.s(b64, 86) + "==", ""},
		{"azure-shared-access-key", "f", "Endpoint=sb://x/;SharedAccessKeyName=k;SharedAccessKey=" + g.s(b64, 43) + "=", ""},
		{"github-token", "f", "ghs_" + g.s(an, 36), ""},
		{"github-fine-grained-token", "f", "github_pat_" + g.s(an+"_", 82), ""},
		{"gitlab-token", "f", "glrt-" + g.s(an, 20), ""},
		{"slack-token", "f", "xoxp-" + g.s("0123456789", 11) + "-" + g.s(an, 24), ""},
		{"slack-webhook", "f", "https://hooks.slack.com/services/T" + g.s(u32, 8) + "/B" + g.s(u32, 8) + "/" + g.s(an, 24), ""},
		{"stripe-secret-key", "f", "rk_live_" + g.s(an, 30), ""},
		{"twilio-api-key", "f", "SK" + g.s(hx, 32), ""},
		{"twilio-auth-token", "f", "TWILIO_AUTH_TOKEN=" + g.s(hx, 32), ""},
		{"sendgrid-api-key", "f", "SG." + g.s(url, 22) + "." + g.s(url, 43), ""},
		{"npm-token", "f", "npm_" + g.s(an, 36), ""},
		{"npmrc-auth", ".npmrc", "//r.corp/:_authToken=" + g.s(an, 30), ""},
		{"pypi-token", "f", "pypi-AgEIcHlwaS5vcmc" + g.s(url, 60), ""},
		{"dockerhub-token", "f", "dckr_pat_" + g.s(url, 27), ""},
		{"docker-config-auth", "config.json", `{"auths":{"r":{"auth":"` + auth + `"}}}`, auth},
		{"shopify-token", "f", "shpss_" + g.s(hx, 32), ""},
		{"openai-api-key", "f", "sk-proj-" + g.s(an, 20) + "T3BlbkFJ" + g.s(an, 20), ""},
		{"anthropic-api-key", "f", "sk-ant-api03-" + g.s(url, 93) + "AA", ""},
		{"vault-token", "f", "hvs." + g.s(url, 95), ""},
		{"age-secret-key", "f", "AGE-SECRET-KEY-1" + g.s("QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L", 58), ""},
		{"rsa-private-key", "k", g.pem("RSA PRIVATE KEY"), ""},
		{"ec-private-key", "k", g.pem("EC PRIVATE KEY"), ""},
		{"dsa-private-key", "k", g.pem("DSA PRIVATE KEY"), ""},
		{"openssh-private-key", "k", g.pem("OPENSSH PRIVATE KEY"), ""},
		{"pkcs8-private-key", "k", g.pem("ENCRYPTED PRIVATE KEY"), ""},
		{"pgp-private-key", "k", g.pem("PGP PRIVATE KEY BLOCK"), ""},
		{"jwt", "f", "Authorization: Bearer " + jwt, jwt},
		{"url-credentials", "f", "redis://default:" + pw + "@cache:6379/0", pw},
		{"db-connection-string", "f", "Data Source=db;Initial Catalog=x;User ID=sa;Password=" + pw + ";", pw},
		{"kubeconfig-token", "kubeconfig", "users:\n- name: x\n  user:\n    token: " + g.s(url, 40) + "\n", ""},
		{"kubeconfig-client-key", "kubeconfig", "    client-key-data: " + g.s(b64, 100), ""},
		{"password-hash", ".htpasswd", "admin:$2y$10$" + g.s(an+"./", 53), ""},
		{"pgpass", "home/.pgpass", "db:5432:app:app:" + pw, pw},
		{"netrc-password", "root/.netrc", "machine x login y password " + pw, pw},
		{"generic-password", ".env", "DB_PASSWORD=" + pw, pw},
	}
	seen := map[string]bool{}
	d := rs.newDetector()
	for _, tc := range positives {
		seen[tc.rule] = true
		t.Run(tc.rule, func(t *testing.T) {
			ms := d.find(tc.path, []byte(tc.text), false)
			var got []string
			for _, m := range ms {
				got = append(got, m.rule.ID)
				if m.rule.ID != tc.rule {
					continue
				}
				sec := tc.text[m.start:m.end]
				if tc.secret != "" && sec != tc.secret {
					t.Errorf("secret %q, want %q", sec, tc.secret)
				}
				ex := excerpt([]byte(tc.text), ms, m)
				if len(sec) >= 8 && strings.Contains(ex, sec[len(sec)/2:]) {
					t.Errorf("excerpt %q reveals the secret", ex)
				}
				return
			}
			t.Errorf("%s not found in %q; got %v", tc.rule, tc.text, got)
		})
	}
	for _, id := range rs.IDs() {
		if !seen[id] {
			t.Errorf("rule %s has no test example", id)
		}
	}

	negatives := []struct{ name, path, text string }{
		{"aws doc example", "f", "aws_access_key_id = AKIAIOSFODNN7EXAMPLE"},
		{"env reference", ".env", "DB_PASSWORD=${DB_PASSWORD}"},
		{"shell variable", ".env", "password=$DB_PASS"},
		{"changeme", "c.yaml", "password: changeme"},
		{"angle placeholder", "c.yaml", "password: <password>"},
		{"your key here", "c.yaml", "api_key: your-api-key-here"},
		{"code reference", "a.py", `password = os.environ["DB_PASSWORD"]`},
		{"code call", "a.py", `token = request.headers.get("X-Token")`},
		{"attribute", "a.js", "const secret = config.session.secret;"},
		{"file reference", "c.yaml", "password_file: /run/secrets/db"},
		{"url key", "c.yaml", "token_url: https://login.corp/token"},
		{"plural", "a.py", "max_tokens = 409612345"},
		{"uuid", "c.json", `"session_token": "123e4567-e89b-42d3-a456-426614174000"`},
		{"public key", "k", g.pem("PUBLIC KEY")},
		{"certificate", "k", g.pem("CERTIFICATE")},
		{"placeholder PEM", "k", "-----BEGIN RSA PRIVATE KEY-----\n...\n-----END RSA PRIVATE KEY-----"},
		{"jwt without signature alg", "f", enc([]byte(`{"alg":"none"}`)) + "." + enc([]byte(`{"sub":"x"}`)) + "." + g.s(url, 20)},
		{"empty url password", "f", "mysql://root:@localhost/db"},
		{"docs url password", "f", "postgres://user:password@localhost/db"},
		{"empty docker auth", "config.json", `{"auths":{"r":{"auth":""}}}`},
		{"docker auth without password", "config.json", `{"auths":{"r":{"auth":"` + base64.StdEncoding.EncodeToString([]byte("justuser")) + `"}}}`},
		{"repeated", ".env", "API_KEY=xxxxxxxxxxxxxxxx"},
		{"sequence", ".env", "API_KEY=1234567890"},
		{"stripe publishable", "f", "pk_live_" + g.s(an, 24)},
		{"pgpass outside .pgpass", "notes.txt", "db:5432:app:app:" + pw},
		{"locked shadow entry", "etc/shadow", "root:*:19000:0:99999:7:::"},
		{"passwordless word", "f", "passwordless=" + pw},
	}
	for _, tc := range negatives {
		t.Run("negative/"+tc.name, func(t *testing.T) {
			for _, m := range d.find(tc.path, []byte(tc.text), false) {
				t.Errorf("%s matched %q", m.rule.ID, tc.text[m.start:m.end])
			}
		})
	}
}

// TestBinaryStrings finds a key among the printable strings of a binary,
// and not across a NUL.
func TestBinaryStrings(t *testing.T) {
	rs, _ := LoadRules()
	g := newRnd()
	id := "AKIA" + g.s(u32, 16)
	bin := append([]byte("\x7fELF\x02\x01\x01\x00\x00\x00"), g.s(an, 100)...)
	bin = append(bin, 0)
	bin = append(bin, id...)
	bin = append(bin, 0, 1, 2)
	ms := rs.newDetector().find("bin", bin, isBinary(bin))
	if len(ms) != 1 || string(bin[ms[0].start:ms[0].end]) != id {
		t.Fatalf("matches %+v", ms)
	}
}

func TestLoadRules(t *testing.T) {
	extra := `
version: 1
allow: ['^internal-test-']
rules:
  - id: corp-token
    description: Corp internal token
    severity: high
    keywords: [corp_]
    regex: '\b(corp_[a-z0-9]{24})\b'
    secretGroup: 1
  - id: generic-password
    description: replaced
    severity: low
    keywords: [password]
    regex: 'password=(\S+)'
    secretGroup: 1
`
	rs, err := LoadRules([]byte(extra))
	if err != nil {
		t.Fatal(err)
	}
	if desc, sev, ok := rs.Describe("generic-password"); !ok || desc != "replaced" || sev != SeverityLow {
		t.Errorf("generic-password not replaced: %q %v", desc, sev)
	}
	g := newRnd()
	ms := rs.newDetector().find("f", []byte("x corp_"+g.s("abcdefghij0123456789", 24)+" y"), false)
	if len(ms) != 1 || ms[0].rule.ID != "corp-token" {
		t.Errorf("corp-token matches %+v", ms)
	}
	for name, bad := range map[string]string{
		"bad yaml":        "rules: [",
		"unknown field":   "rules:\n  - id: x\n    regexp: y\n",
		"no regex":        "rules:\n  - id: x\n    severity: low\n    keywords: [a]\n",
		"bad regex":       "rules:\n  - id: x\n    severity: low\n    keywords: [a]\n    regex: '('\n",
		"no keywords":     "rules:\n  - id: x\n    severity: low\n    regex: 'a'\n",
		"bad severity":    "rules:\n  - id: x\n    severity: dire\n    keywords: [a]\n    regex: 'a'\n",
		"bad validate":    "rules:\n  - id: x\n    severity: low\n    keywords: [a]\n    regex: 'a'\n    validate: magic\n",
		"version":         "version: 9\n",
		"group too large": "rules:\n  - id: x\n    severity: low\n    keywords: [a]\n    regex: 'a'\n    secretGroup: 2\n",
	} {
		if _, err := LoadRules([]byte(bad)); !errors.Is(err, ErrRules) {
			t.Errorf("%s: error %v, want ErrRules", name, err)
		}
	}
}
