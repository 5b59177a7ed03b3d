#!/bin/sh
# zdt-hello: a host binary shipped by the zdt quickstart bundle.
echo "zdt-hello: installed by zdt from the quickstart bundle"
