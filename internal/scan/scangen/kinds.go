package scangen

import (
	"fmt"
	"strings"
)

// Kinds real images carry that the first plan did not cover: CI configs,
// Terraform state, git packs, Helm values, Java keystores, an .npmrc inside
// node_modules, Jupyter outputs, SQL dumps, core dumps.
func (b *builder) plantNewKinds() {
	f := b.f

	// CI config with a hard-coded token next to proper references.
	sonar := f.sonar()
	ci := "stages: [test, scan, deploy]\n\nvariables:\n  DOCKER_DRIVER: overlay2\n  SONAR_HOST_URL: https://sonar.corp.internal\n  SONAR_TOKEN: " + sonar + "\n\nscan:\n  stage: scan\n  script:\n    - sonar-scanner -Dsonar.login=$SONAR_TOKEN\n\ndeploy:\n  stage: deploy\n  script:\n    - docker login -u gitlab-ci-token -p $CI_JOB_TOKEN $CI_REGISTRY\n"
	b.secretK("ci-config", layerApp, "app/.gitlab-ci.yml", ci, sonar, "sonarqube-token", "ci-config")

	// Terraform state: an IAM key pair and a database password.
	id, sk, dbpw := f.awsKeyID(), f.awsSecret(), f.password()
	tf := `{
  "version": 4,
  "terraform_version": "1.7.5",
  "serial": 42,
  "lineage": "` + f.uuid() + `",
  "resources": [
    {
      "mode": "managed",
      "type": "aws_iam_access_key",
      "name": "deploy",
      "instances": [
        {
          "attributes": {
            "id": "` + id + `",
            "secret": "` + sk + `",
            "status": "Active",
            "user": "deploy-bot"
          },
          "sensitive_attributes": []
        }
      ]
    },
    {
      "mode": "managed",
      "type": "aws_db_instance",
      "name": "main",
      "instances": [
        {
          "attributes": {
            "engine": "postgres",
            "username": "app",
            "password": "` + dbpw + `",
            "endpoint": "main.cluster-c0ffee.eu-west-1.rds.amazonaws.com:5432"
          }
        }
      ]
    }
  ]
}
`
	b.secretK("terraform-state", layerApp, "app/infra/terraform.tfstate", tf, id, "aws-access-key-id", "terraform-state")
	b.labelK("terraform-state", layerApp, "app/infra/terraform.tfstate", lineOf(tf, sk), "generic-password", "terraform-state")
	b.labelK("terraform-state", layerApp, "app/infra/terraform.tfstate", lineOf(tf, dbpw), "generic-password", "terraform-state")

	// A .env committed once, then deleted from the tree: still in the pack.
	st := f.stripe()
	committed := "APP_ENV=production\nSTRIPE_API_KEY=" + st + "\n"
	pack, ids := gitPack([]byte("# app\n\nThe billing service.\n"), []byte(committed))
	packPath := "app/.git/objects/pack/pack-" + f.hex(40) + ".pack"
	b.add(layerApp, packPath, pack)
	b.labelK("git-pack", layerApp, packPath+"!/"+ids[1], lineOf(committed, st), "stripe-secret-key", "git-pack")

	// Helm values for production with the database password filled in.
	hv := f.password()
	helm := "replicaCount: 3\nimage:\n  repository: registry.corp.internal/team/app\n  tag: 1.4.2\npostgresql:\n  enabled: true\n  auth:\n    username: app\n    password: \"" + hv + "\"\n    database: app\ningress:\n  enabled: true\n"
	b.secretK("helm-values", layerApp, "app/deploy/helm/values-prod.yaml", helm, hv, "generic-password", "helm-values")

	// A Java keystore with the server's private key.
	ks := f.jks(true, "server")
	b.add(layerApp, "app/config/keystore.jks", ks)
	b.labelK("java-keystore", layerApp, "app/config/keystore.jks", 0, "java-keystore", "keystore")

	// An .npmrc a package shipped inside node_modules.
	npm := f.npm()
	rc := "//registry.npmjs.org/:_authToken=" + npm + "\n"
	b.secretK("npmrc-in-node-modules", layerDeps, "app/node_modules/@corp/ui-kit/.npmrc", rc, npm, "npm-token", "vendored")

	// A notebook whose output printed a token.
	hf := f.huggingface()
	nb := notebook([]string{"from huggingface_hub import whoami", "print(\"token:\", HfFolder.get_token())"},
		[]string{"token: " + hf})
	b.secretK("jupyter-output", layerApp, "app/notebooks/exploration.ipynb", nb, hf, "huggingface-token", "jupyter")

	// An SQL dump that creates the reporting user.
	sqlpw := f.password()
	sg := f.sendgrid()
	dump := "-- PostgreSQL database dump\n\nSET statement_timeout = 0;\nCREATE ROLE reporting WITH LOGIN PASSWORD '" + sqlpw + "';\nCREATE TABLE integrations (id serial, name text, api_key text);\nCOPY integrations (id, name, api_key) FROM stdin;\n1\tmailer\t" + sg + "\n\\.\n"
	b.secretK("sql-dump", layerApp, "app/db/dump-2024-03-01.sql", dump, sqlpw, "sql-password", "sql-dump")
	b.labelK("sql-dump", layerApp, "app/db/dump-2024-03-01.sql", lineOf(dump, sg), "sendgrid-api-key", "sql-dump")

	// A core dump of the app: its environment is in there.
	corepw := f.password()
	core := b.fill.coreDump(96<<10, "HOME=/app", "DB_PASSWORD="+corepw, "PATH=/usr/local/bin:/usr/bin")
	b.add(layerApp, "app/core.4242", core)
	b.labelK("core-dump", layerApp, "app/core.4242", 0, "generic-password", "binary")
}

// Decoys of the kinds the issue found in a real image, and more: tests and
// fixtures of vendored packages, READMEs, defaults, values from the
// package's own documentation, trust stores, empty Helm values.
func (b *builder) plantNewDecoys() {
	f := b.f
	b.decoy(layerDeps, "usr/lib/python3/site-packages/psycopg2/tests/testconfig.py",
		"import os\n\ndbname = os.environ.get('PSYCOPG2_TESTDB', 'psycopg2_test')\ndbhost = 'localhost'\ndbuser = 'postgres'\ndbpass = '"+f.password()[6:]+"'\n", "dbpass", "vendored-test")
	b.decoy(layerApp, "app/README.md", "# app\n\nLocal development:\n\n    export DATABASE_URL=postgres://app:"+f.pick(alnum, 12)+"@localhost:5432/app\n    make run\n", "DATABASE_URL", "doc-example")
	b.decoy(layerApp, "app/tests/fixtures/accounts.json", "[\n  {\"email\": \"bob@corp.internal\", \"password\": \""+f.pick(pwChars, 14)+"\"}\n]\n", "password", "test-fixture")
	b.decoy(layerApp, "app/config/local.env", "DATABASE_URL=postgres://postgres:postgres@db:5432/app\nREDIS_URL=redis://localhost:6379/0\n", "DATABASE_URL", "default-credential")
	b.decoy(layerApp, "app/deploy/helm/values.yaml", "postgresql:\n  auth:\n    username: app\n    password: \"\"\n    existingSecret: app-db\n", "password", "placeholder")
	b.decoy(layerApp, "app/deploy/helm/templates/secret.yaml", "apiVersion: v1\nkind: Secret\nstringData:\n  password: {{ .Values.postgresql.auth.password | quote }}\n", "password", "placeholder")
	b.decoy(layerBase, "etc/ssl/certs/java/cacerts", string(f.jks(false, "digicertglobalrootca", "isrgrootx1")), "", "trust-store")
	b.decoy(layerBase, "usr/share/doc/redis/examples/redis.conf", "# requirepass foobared\nrequirepass foobared\nmaxmemory 2gb\n", "requirepass foobared\n", "doc-example")
	// A package's default, printed in its own README.
	smtp := f.pick(alnum, 6) + f.pick(digits, 4)
	b.add(layerDeps, "app/node_modules/mail-relay/README.md", []byte("## Options\n\nThe bundled test server accepts user `relay` with password "+smtp+".\n"))
	b.decoy(layerDeps, "app/node_modules/mail-relay/lib/defaults.js", "module.exports = {\n  host: 'smtp.relay.local',\n  user: 'relay',\n  pass: '"+smtp+"',\n};\n", "pass:", "documented-default")
	b.decoy(layerApp, "app/infra/variables.tf", "variable \"db_password\" {\n  type      = string\n  sensitive = true\n  default   = \"\"\n}\n", "db_password", "placeholder")
	b.decoy(layerApp, "app/notebooks/README.md", "Set your token first:\n\n```python\nos.environ[\"HF_TOKEN\"] = \"hf_"+strings.Repeat("x", 34)+"\"\n```\n", "HF_TOKEN", "doc-example")
	b.decoy(layerApp, "app/db/seed_test.sql", "-- test data\nCREATE ROLE tester WITH LOGIN PASSWORD '"+f.pick(alnum, 12)+"';\n", "PASSWORD", "test-fixture")
	b.decoy(layerApp, "app/config/secrets.env", fmt.Sprintf("STRIPE_API_KEY=vault:secret/data/billing#stripe\nDB_PASSWORD=ENC(%s)\n", f.b64(24)), "vault:", "secret-reference")
}
