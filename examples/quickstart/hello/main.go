// Command hello is the program inside the quickstart example's image: it
// prints a greeting, or serves one over HTTP with -listen.
package main

import (
	"flag"
	"fmt"
	"net/http"
	"os"
	"runtime"
)

func main() {
	listen := flag.String("listen", "", "serve the greeting on this address")
	flag.Parse()
	msg := fmt.Sprintf("hello from a zdt bundle (%s/%s)\n", runtime.GOOS, runtime.GOARCH)
	if *listen == "" {
		fmt.Print(msg)
		return
	}
	http.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, msg) })
	if err := http.ListenAndServe(*listen, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
