package main

import (
	"context"

	"github.com/spf13/cobra"
)

func dockerCmd(ctx context.Context) *cobra.Command { return &cobra.Command{Use: "docker"} }
