module olm.dev/olm-example

go 1.19

require olm.dev/olm v0.0.0

replace olm.dev/olm => ../../bindings/go
