package scan

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"regexp"
	"regexp/syntax"
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
	basic := base64.StdEncoding.EncodeToString([]byte("deploy:" + pw))
	h := g.s(hx, 32)
	uuid := h[:8] + "-" + h[8:12] + "-4" + h[13:16] + "-a" + h[17:20] + "-" + h[20:]
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
		{"generic-password", "nb.ipynb", `    "os.environ[\"DB_PASSWORD\"] = \"` + pw + `\"\n",`, pw},
		{"generic-password", "settings.json", `{"log": "{\"password\": \"` + pw + `\"}"}`, pw},
		{"generic-password", "k8s/secret.yaml", "data:\n  password: " + base64.StdEncoding.EncodeToString([]byte(pw)), ""},
		{"generic-key", ".env", "APP_KEY=base64:" + g.s(b64, 43) + "=", ""},
		{"generic-key", "config.js", "  encryptionKey: '" + g.s(an, 32) + "',", ""},
		{"uuid-token", ".env", "CONSUL_HTTP_TOKEN=" + uuid, uuid},
		{"cli-password-flag", "deploy.sh", "docker login registry.corp --username ci --password " + pw, pw},
		{"mysql-cli-password", "backup.sh", "mysqldump -u root -p" + pw + " shop > /backup/shop.sql", pw},
		{"curl-basic-auth", "Dockerfile", "RUN curl -fsSL -u deploy:" + pw + " https://nexus.corp/repo/app.tgz", pw},
		{"basic-auth-header", "req.log", "Authorization: Basic " + basic, basic},
		{"bearer-token", "req.log", "Authorization: Bearer " + g.s(url, 40), ""},
		{"xml-password", "settings.xml", "<server><id>corp</id><username>deploy</username><password>" + pw + "</password></server>", pw},
		{"xml-attribute-password", "web.config", `<add key="SmtpPassword" value="` + pw + `" />`, pw},
		{"php-define-password", "wp-config.php", "define( 'DB_PASSWORD', '" + pw + "' );", pw},
		{"sql-password", "init.sql", "CREATE USER app WITH PASSWORD '" + pw + "';", pw},
		{"redis-password", "redis.conf", "requirepass " + pw, pw},
		{"digitalocean-token", "f", "dop_v1_" + g.s(hx, 64), ""},
		{"terraform-cloud-token", "credentials.tfrc.json", `"token": "` + g.s(an, 14) + ".atlasv1." + g.s(url, 67) + `"`, ""},
		{"vault-batch-token", "f", "hvb." + g.s(url, 120), ""},
		{"vault-token-file", "root/.vault-token", "s." + g.s(an, 24) + "\n", ""},
		{"doppler-token", "f", "dp.st.prd." + "x" + " dp.st." + g.s(an, 43), ""},
		{"pulumi-token", "f", "pul-" + g.s(hx, 40), ""},
		{"grafana-token", "f", "glsa_" + g.s(an, 32) + "_" + g.s(hx, 8), ""},
		{"huggingface-token", "f", "hf_" + g.s("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", 34), ""},
		{"replicate-token", "f", "r8_" + g.s(an, 37), ""},
		{"groq-api-key", "f", "gsk_" + g.s(an, 52), ""},
		{"perplexity-api-key", "f", "pplx-" + g.s(an, 48), ""},
		{"xai-api-key", "f", "xai-" + g.s(an, 80), ""},
		{"databricks-token", "f", "dapi" + g.s(hx, 32), ""},
		{"alibaba-access-key-id", "f", "LTAI" + g.s(an, 20), ""},
		{"newrelic-key", "f", "NRAK-" + g.s("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 27), ""},
		{"sentry-token", "f", "sntryu_" + g.s(hx, 64), ""},
		{"atlassian-token", "f", "ATATT3" + g.s(url, 186), ""},
		{"linear-api-key", "f", "lin_api_" + g.s(an, 40), ""},
		{"notion-token", "f", "ntn_" + g.s("0123456789", 11) + g.s(an, 35), ""},
		{"airtable-token", "f", "pat" + g.s(an, 14) + "." + g.s(hx, 64), ""},
		{"figma-token", "f", "figd_" + g.s(url, 40), ""},
		{"postman-api-key", "f", "PMAK-" + g.s(hx, 24) + "-" + g.s(hx, 34), ""},
		{"stripe-webhook-secret", "f", "whsec_" + g.s(an, 32), ""},
		{"square-token", "f", "sq0csp-" + g.s(url, 43), ""},
		{"braintree-token", "f", "access_token$production$" + g.s("abcdefghijklmnopqrstuvwxyz0123456789", 16) + "$" + g.s(hx, 32), ""},
		{"telegram-bot-token", "f", "BOT_TOKEN=" + g.s("0123456789", 10) + ":AA" + g.s(url, 33), ""},
		{"discord-webhook", "f", "https://discord.com/api/webhooks/" + g.s("0123456789", 18) + "/" + g.s(url, 68), ""},
		{"teams-webhook", "f", "https://corp.webhook.office.com/webhookb2/" + uuid + "@" + uuid + "/IncomingWebhook/" + g.s(hx, 32) + "/" + uuid, ""},
		{"google-oauth-token", "f", `"refresh_token": "1//0` + g.s(url, 60) + `"`, ""},
		{"azure-ad-client-secret", "f", "AZURE_CLIENT_SECRET=" + g.s(an, 3) + "8Q~" + g.s(url, 34), ""},
		{"azure-sas-token", "f", "https://x.blob.core.windows.net/c?sv=2022-11-02&ss=b&srt=o&sp=r&se=2030-01-01&sig=" + g.s(an, 43) + "%3D", ""},
		{"mapbox-secret-token", "f", "sk.eyJ" + g.s(url, 60) + "." + g.s(url, 22), ""},
		{"jfrog-token", "f", "AKCp" + g.s(an, 69), ""},
		{"sonarqube-token", "f", "squ_" + g.s(hx, 40), ""},
		{"buildkite-token", "f", "bkua_" + g.s(hx, 40), ""},
		{"gitlab-other-token", "f", "glft-" + g.s(an, 20), ""},
		{"slack-app-token", "f", "xapp-1-A" + g.s("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 10) + "-" + g.s("0123456789", 13) + "-" + g.s(hx, 64), ""},
		{"mailgun-api-key", "f", "key-" + g.s(hx, 32), ""},
		{"mailchimp-api-key", "f", g.s(hx, 32) + "-us14", ""},
		{"flyio-token", "f", "fo1_" + g.s(url, 43), ""},
		{"heroku-api-key", "f", "HEROKU_API_KEY=" + uuid, uuid},
		{"rubygems-api-key", "f", "rubygems_" + g.s(hx, 48), ""},
		{"nuget-api-key", "f", "oy2" + g.s("abcdefghijklmnopqrstuvwxyz0123456789", 43), ""},
		{"cloudflare-origin-ca-key", "f", "v1.0-" + g.s(hx, 24) + "-" + g.s(hx, 146), ""},
		{"supabase-token", "f", "sbp_" + g.s(hx, 40), ""},
		{"planetscale-token", "f", "pscale_tkn_" + g.s(url, 43), ""},
		{"contentful-token", "f", "CFPAT-" + g.s(url, 43), ""},
		{"onepassword-token", "f", "ops_eyJ" + g.s(url, 300), ""},
		{"openai-project-key", "f", "sk-proj-" + g.s(url, 120), ""},
		{"generic-private-key", "k", g.pem("X25519 PRIVATE KEY"), ""},
		{"putty-private-key", "id.ppk", "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nComment: deploy\nPublic-Lines: 2\n" + g.s(b64, 64) + "\n" + g.s(b64, 20) + "\nPrivate-Lines: 1\n" + g.s(b64, 70) + "\nPrivate-MAC: " + g.s(hx, 64) + "\n", ""},
		{"openvpn-static-key", "ta.key", "-----BEGIN OpenVPN Static key V1-----\n" + g.s(hx, 32) + "\n" + g.s(hx, 32) + "\n" + g.s(hx, 32) + "\n" + g.s(hx, 32) + "\n" + g.s(hx, 32) + "\n" + g.s(hx, 32) + "\n" + g.s(hx, 32) + "\n" + g.s(hx, 32) + "\n-----END OpenVPN Static key V1-----\n", ""},
		{"wireguard-private-key", "wg0.conf", "[Interface]\nPrivateKey = " + g.s(b64, 42) + "A=\nAddress = 10.0.0.1/24\n", ""},
		{"jwk-private-key", "jwks.json", `{"keys": [{"kty": "EC", "crv": "P-256", "x": "` + g.s(url, 43) + `", "y": "` + g.s(url, 43) + `", "d": "` + g.s(url, 43) + `"}]}`, ""},
		{"java-keystore", "keystore.jks", jks(g, 1), ""},
		{"dynatrace-token", "f", "dt0c01." + g.s(an, 24) + "." + g.s(an, 64), ""},
		{"prefect-api-key", "f", "pnu_" + g.s(an, 36), ""},
		{"readme-api-key", "f", "rdme_" + g.s("abcdefghijklmnopqrstuvwxyz0123456789", 70), ""},
		{"scalingo-token", "f", "tk-us-" + g.s(url, 48), ""},
		{"brevo-api-key", "f", "xkeysib-" + g.s(hx, 64) + "-" + g.s(an, 16), ""},
		{"settlemint-token", "f", "sm_pat_" + g.s(an, 16), ""},
		{"shippo-token", "f", "shippo_live_" + g.s(hx, 40), ""},
		{"intra42-client-secret", "f", "s-s4t2ud-" + g.s(hx, 64), ""},
		{"sidekiq-credentials", ".bundle/config", "BUNDLE_ENTERPRISE__CONTRIBSYS__COM: " + g.s(hx, 8) + ":" + g.s(hx, 8), ""},
		{"facebook-access-token", "f", "EAA" + g.s(an, 150), ""},
		{"openshift-token", "f", "sha256~" + g.s(url, 43), ""},
		{"sourcegraph-token", "f", "sgp_" + g.s(hx, 16) + "_" + g.s(hx, 40), ""},
		{"generic-password", "main.go", "var dbPassword string = \"" + pw + "\"", pw},
		{"generic-password", "App.java", "System.setProperty(\"DB_PASSWORD\", \"" + pw + "\");", pw},
		{"generic-password", "Makefile", "API_TOKEN ?= " + pw, pw},
		{"generic-password", "conf.php", "$dbPassword .= '" + pw + "';", pw},
		{"generic-password", "app.ts", "const apiToken: string = '" + pw + "';", pw},
		{"xml-password", "settings.xml", "<password>\n    " + pw + "\n</password>", pw},
		{"java-keystore", "keystore.p12", p12(g), ""},
		{"rails-master-key", "app/config/master.key", g.s(hx, 32), ""},
		{"jenkins-master-key", "var/jenkins_home/secrets/master.key", g.s(hx, 256), ""},
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
		{"comparison", "a.py", `if password == "` + pw + `":`},
		{"base64 placeholder", "secret.yaml", "data:\n  password: " + base64.StdEncoding.EncodeToString([]byte("changeme"))},
		{"vault reference", "app.yaml", "db_password: vault:secret/data/db#password"},
		{"jasypt encrypted", "app.properties", "spring.datasource.password=ENC(" + g.s(b64, 32) + ")"},
		{"secret manager arn", "task.json", `"secret": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf"`},
		{"public key name", ".env", "STRIPE_PUBLISHABLE_KEY=pk_live_" + g.s(an, 24)},
		{"primary key", "schema.js", "  primaryKey: 'user_account_id_2024',"},
		{"cache key", "a.py", `cache_key = "users:v2:profile:" + uid`},
		{"session uuid", "s.json", `"sessionToken": "` + uuid + `"`},
		{"password stdin", "push.sh", "echo $TOKEN | docker login --password-stdin -u bot"},
		{"cli flag variable", "run.sh", "app --password \"$DB_PASSWORD\""},
		{"basic prose", "README", "the basic information about tokens"},
		{"basic without password", "req.log", "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("onlyuser"))},
		{"bearer placeholder", "api.md", "Authorization: Bearer ${ACCESS_TOKEN}"},
		{"maven encrypted", "settings.xml", "<password>{" + g.s(b64, 40) + "=}</password>"},
		{"xml property name", "pom.xml", "<password.encoding>utf-8-strict-mode</password.encoding>"},
		{"truststore", "cacerts", jks(g, 2)},
		{"sql hash", "dump.sql", "CREATE USER x IDENTIFIED BY PASSWORD '*" + strings.ToUpper(g.s(hx, 40)) + "';"},
		{"mysql prompt", "run.sh", "mysql -u root -p shop < dump.sql"},
		{"redis placeholder", "redis.conf", "requirepass ${REDIS_PASSWORD}"},
		{"ssh public key as key", ".env", "DEPLOY_KEY=ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI" + g.s(b64, 43)},
		{"alphabet placeholder", ".env", "GOOGLE_API_KEY=AIzaSyabcdefghijklmnopqrstuvwxyz1234567"},
		{"digit run placeholder", ".env", "DATABRICKS_TOKEN=dapi123456789012345678a9bc01234defg5"},
		{"short slack sample", "f", "xoxb-12345-abcd234"},
		{"curl placeholder", "README", "curl -u <user:password> https://test.com/endpoint"},
		{"comparison in code", "a.go", "if apiToken == \"" + pw + "\" {"},
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

// jks builds a JKS keystore with one entry of the given tag (1: private
// key, 2: trusted certificate).
func jks(g rnd, tag uint32) string {
	var b bytes.Buffer
	u32 := func(v uint32) { binary.Write(&b, binary.BigEndian, v) }
	utf := func(s string) { binary.Write(&b, binary.BigEndian, uint16(len(s))); b.WriteString(s) }
	u32(0xFEEDFEED)
	u32(2)
	u32(1)
	u32(tag)
	utf("server")
	binary.Write(&b, binary.BigEndian, uint64(1700000000000))
	if tag == 1 {
		key := []byte(g.s(an, 600))
		u32(uint32(len(key)))
		b.Write(key)
		u32(1)
	}
	utf("X.509")
	cert := []byte(g.s(an, 500))
	u32(uint32(len(cert)))
	b.Write(cert)
	b.WriteString(g.s(an, 20))
	return b.String()
}

// p12 builds the start of a PKCS#12 file with a shrouded key bag.
func p12(g rnd) string {
	body := append([]byte{0x02, 0x01, 0x03, 0x30, 0x82, 0x05, 0x00}, oidPKCS7Data...)
	body = append(body, []byte(g.s(an, 200))...)
	body = append(body, oidShroudedKeyBag...)
	body = append(body, []byte(g.s(an, 900))...)
	return string(append([]byte{0x30, 0x82, byte(len(body) >> 8), byte(len(body))}, body...))
}

// TestCompileAnyOf: the two merged regexps accept exactly what the
// alternatives accept one by one, for the built-in allow list and every
// rule's denyValue.
func TestCompileAnyOf(t *testing.T) {
	var f rulesFile
	if err := decodeRules(builtinRules, &f); err != nil {
		t.Fatal(err)
	}
	lists := [][]string{f.Allow}
	for _, r := range f.Rules {
		if r.DenyValue != "" {
			lists = append(lists, []string{r.DenyValue})
		}
	}
	g := newRnd()
	values := []string{"", "example", "EXAMPLE-key", "changeme", "${X}", "<x>", "password", "Zr8f3kQ9pLx2Vb7m", "MaxResults",
		"a.b.c", "/etc/x", "ENC(abc)", "vault:secret/x", "%s", "%TTL", "__X__", "&anchor", "pk_live_x", "x-oauth-basic",
		"ghp_" + g.s(an, 36), g.s(an+"!%*-_.", 20), "secret_key_base", "X-Amz-Date", "scram-sha-256", "|x"}
	for range 200 {
		values = append(values, g.s(an+"!%*-_.:/$<>{}()[]", 1+g.r.IntN(30)))
	}
	for _, srcs := range lists {
		merged, err := compileAnyOf(srcs...)
		if err != nil {
			t.Fatal(err)
		}
		var each []*regexp.Regexp
		for _, src := range srcs {
			re, _ := syntax.Parse(src, syntax.Perl)
			subs := []*syntax.Regexp{re}
			if re.Op == syntax.OpAlternate {
				subs = re.Sub
			}
			for _, s := range subs {
				each = append(each, regexp.MustCompile(s.String()))
			}
		}
		for _, v := range values {
			want := false
			for _, re := range each {
				want = want || re.MatchString(v)
			}
			if got := merged.Match([]byte(v)); got != want {
				t.Errorf("%q: merged %v, alternatives %v (%v)", v, got, want, srcs)
			}
		}
	}
}

// TestValuesNotIdentifiers: random credentials with a dot or a slash are
// not taken for code references (config.apiKey) or paths (a/b).
func TestValuesNotIdentifiers(t *testing.T) {
	rs, _ := LoadRules()
	d := rs.newDetector()
	for _, tc := range []struct{ path, text, secret string }{
		{".env", "DB_PASSWORD=C0fferAbc.Def12xy", "C0fferAbc.Def12xy"},
		{".env", "DB_PASSWORD=my_s3cret_2024", "my_s3cret_2024"},
		{"app.yml", "  signing-key: ujgFHy6MzSt9aMD6/frgMraNyZsG1kmFJ0en4zx0pc1EKt9dThltknTLvfYZc4ah", "ujgFHy6MzSt9aMD6/frgMraNyZsG1kmFJ0en4zx0pc1EKt9dThltknTLvfYZc4ah"},
	} {
		found := false
		for _, m := range d.find(tc.path, []byte(tc.text), false) {
			found = found || tc.text[m.start:m.end] == tc.secret
		}
		if !found {
			t.Errorf("%q not found in %q", tc.secret, tc.text)
		}
	}
	for _, text := range []string{"secret: config.session.secret", "token = settings.SECRET_KEY", "api_key: Settings.ApiKey",
		"private_key: keys/prod/signing", "app_key = process.env.APP_KEY"} {
		for _, m := range d.find("x.yml", []byte(text), false) {
			t.Errorf("%s matched %q", m.rule.ID, text[m.start:m.end])
		}
	}
}
