package main

import (
	"context"

	"github.com/spf13/cobra"
)

func fetchCmd(ctx context.Context) *cobra.Command { return &cobra.Command{Use: "fetch"} }
