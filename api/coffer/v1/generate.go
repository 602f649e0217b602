// Package cofferv1 is the generated code of Coffer's agent wire protocol.
package cofferv1

//go:generate protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative agent.proto
