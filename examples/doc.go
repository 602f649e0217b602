// Package examples holds runnable examples of the ways an application
// consumes Coffer secrets (see README.md), and their tests against a real
// coffer-server, coffer-agent and Docker engine.
package examples
