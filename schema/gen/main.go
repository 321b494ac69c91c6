// Command gen writes schema/merlin.schema.json from the manifest types. It
// runs from `go generate ./schema`, with the schema directory as its working
// directory.
package main

import (
	"flag"
	"fmt"
	"os"

	"merlin.dev/merlin/schema"
)

func main() {
	out := flag.String("o", "merlin.schema.json", "output file")
	src := flag.String("manifest", "../manifest", "directory of package manifest")
	flag.Parse()
	data, err := schema.Generate(*src)
	if err == nil {
		err = os.WriteFile(*out, data, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}
