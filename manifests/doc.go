// Package manifests owns what users write and what zdt records about it: the
// bundle spec (zdt.yaml), its lock file (zdt.lock.yaml), the media types and
// annotation keys of the bundle format, and validation that reports every
// problem at once as "file:line:col: what is wrong".
//
// It imports no other zdt package; every other package builds on it.
package manifests
