// The header is the whole module; SwiftPM wants a source file to build a C target.
