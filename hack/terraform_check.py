#!/usr/bin/env python3
"""Static checks of terraform/ that need no provider plugins (terraform validate does).

For each module (terraform/<cloud>) and its example root (terraform/<cloud>/example):
- every var.X, local.X, data.T.N, resource T.N and module.M referenced is declared;
- every module.M.X an example uses is an output of the module, and the example passes every
  variable of the module that has no default;
- every variable has a description and a type, every validation an error_message, every
  output a description;
- the Helm values a module passes (local.helm_values) fit the chart's values.schema.json:
  every key exists in the schema, and literal values have the schema's type and enum;
- no workload identity holds an IAM or identity-administering role (GCP: no roles/iam.*;
  Azure: no Owner, access administration or managed-identity roles), and on Azure every
  assignment-writing role the operator holds carries a condition that lets it assign only the
  namespaces' data roles, to service principals.

Prints one line per problem and exits 1 when there is any.
"""

import json
import re
import sys
from pathlib import Path

import hcl2

ROOT = Path(__file__).resolve().parent.parent
TERRAFORM = ROOT / "terraform"
SCHEMA = json.loads((ROOT / "deploy/helm/substratus/values.schema.json").read_text())

REF = re.compile(
    r"(?<![\w.])(var|local|module|data)\.([A-Za-z_][\w-]*)(?:\.([A-Za-z_][\w-]*))?"
    r"|(?<![\w.])((?:google|aws|azurerm|helm|tls)_[a-z0-9_]+)\.([A-Za-z_][\w-]*)"
)
BUILTIN_ROOTS = {"each", "count", "self", "path", "terraform"}

problems = []


def unquote(s):
    return s[1:-1] if isinstance(s, str) and len(s) >= 2 and s[0] == s[-1] == '"' else s


def strings(node):
    """Every string inside a parsed HCL value (keys included)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield k
            yield from strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from strings(v)


class Module:
    def __init__(self, path):
        self.path = path
        self.variables, self.locals, self.outputs = {}, {}, {}
        self.resources, self.data, self.modules = set(), set(), {}
        self.bodies = []
        for tf in sorted(path.glob("*.tf")):
            doc = hcl2.load(tf.open())
            for block in doc.get("variable", []):
                for name, body in block.items():
                    self.variables[unquote(name)] = body
            for block in doc.get("locals", []):
                for name, body in block.items():
                    if name != "__comments__":
                        self.locals[name] = body
            for block in doc.get("output", []):
                for name, body in block.items():
                    self.outputs[unquote(name)] = body
            for block in doc.get("resource", []):
                for rtype, named in block.items():
                    for name in named:
                        self.resources.add((unquote(rtype), unquote(name)))
            for block in doc.get("data", []):
                for rtype, named in block.items():
                    for name in named:
                        self.data.add((unquote(rtype), unquote(name)))
            for block in doc.get("module", []):
                for name, body in block.items():
                    self.modules[unquote(name)] = body
            self.bodies.append((tf, {k: v for k, v in doc.items() if k != "__comments__"}))

    def rel(self, tf):
        return tf.relative_to(ROOT)

    def check_declarations(self):
        for name, body in self.variables.items():
            if "description" not in body:
                problems.append(f"{self.path.relative_to(ROOT)}: variable {name} has no description")
            if "type" not in body:
                problems.append(f"{self.path.relative_to(ROOT)}: variable {name} has no type")
            for v in body.get("validation", []):
                if "error_message" not in v:
                    problems.append(f"{self.path.relative_to(ROOT)}: a validation of variable {name} has no error_message")
        for name, body in self.outputs.items():
            if "description" not in body:
                problems.append(f"{self.path.relative_to(ROOT)}: output {name} has no description")

    def check_references(self, child=None):
        for tf, doc in self.bodies:
            for s in strings(doc):
                if "${" not in s and not s.startswith("var.") and "." not in s:
                    continue
                for m in REF.finditer(s):
                    kind, a, b, rtype, rname = m.groups()
                    if kind == "var" and a not in self.variables:
                        problems.append(f"{self.rel(tf)}: var.{a} is not declared")
                    elif kind == "local" and a not in self.locals:
                        problems.append(f"{self.rel(tf)}: local.{a} is not declared")
                    elif kind == "data" and (a, b) not in self.data:
                        problems.append(f"{self.rel(tf)}: data.{a}.{b} is not declared")
                    elif kind == "module":
                        if a not in self.modules:
                            problems.append(f"{self.rel(tf)}: module.{a} is not declared")
                        elif child is not None and b and b not in child.outputs:
                            problems.append(f"{self.rel(tf)}: module.{a}.{b} is not an output of {child.path.relative_to(ROOT)}")
                    elif rtype and rtype.split("_")[0] in ("google", "aws", "azurerm", "helm", "tls"):
                        if (rtype, rname) not in self.resources and not s.lstrip('"').startswith(rtype):
                            problems.append(f"{self.rel(tf)}: {rtype}.{rname} is not declared")

    def check_module_call(self, child):
        for name, body in self.modules.items():
            for var, decl in child.variables.items():
                if "default" not in decl and var not in body:
                    problems.append(f"{self.path.relative_to(ROOT)}: module.{name} does not set {var}, which has no default")
            for arg in body:
                if arg.startswith("__"):
                    continue
                if arg not in ("source", "providers", "depends_on", "count", "for_each") and arg not in child.variables:
                    problems.append(f"{self.path.relative_to(ROOT)}: module.{name} sets {arg}, which {child.path.relative_to(ROOT)} does not declare")


# The account every namespace's workloads act as, per module: it may hold no IAM role (an
# iam.* role would let any tenant's container rewrite IAM policies or mint tokens).
WORKLOAD_IDENTITIES = {"gcp": "google_service_account.substratus"}


def check_workload_identity(module):
    workload = WORKLOAD_IDENTITIES.get(module.path.name)
    if workload is None:
        return
    if (tuple(workload.split(".")) not in module.resources):
        problems.append(f"{module.path.relative_to(ROOT)}: no {workload} (the workloads' identity)")
        return
    for tf, doc in module.bodies:
        for block in doc.get("resource", []):
            for rtype, named in block.items():
                if not unquote(rtype).endswith(("_iam_member", "_iam_binding")):
                    continue
                for name, body in named.items():
                    role = unquote(body.get("role", ""))
                    members = [body.get("member", "")] + list(body.get("members", []))
                    grantee = any(f"{workload}.email" in str(m) for m in members)
                    if grantee and str(role).startswith("roles/iam."):
                        problems.append(
                            f"{module.rel(tf)}: {unquote(rtype)}.{unquote(name)} grants {role} to "
                            f"{workload}, the identity of every workload"
                        )


# Azure: roles that let their holder grant access or act as other identities. The workloads'
# identity may hold none; the operator may hold an assignment-writing role only under a
# condition naming the roles it may assign (constrained delegation), and those only the data
# roles namespaces' identities get.
AZURE_ADMIN_ROLES = {"Owner", "User Access Administrator", "Role Based Access Control Administrator"}
AZURE_IDENTITY_ROLES = {"Managed Identity Contributor", "Managed Identity Operator"}
AZURE_ASSIGNABLE = {
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe",  # Storage Blob Data Contributor
    "2a1e307c-b015-4ebd-883e-5b7698a07328",  # Container Registry Repository Writer
}
GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def check_azure_delegation(module):
    if module.path.name != "azure":
        return

    def resolved(text):
        return re.sub(r"\$\{local\.([\w-]+)\}", lambda m: str(unquote(module.locals.get(m.group(1), m.group(0)))), text)

    for tf, doc in module.bodies:
        for block in doc.get("resource", []):
            for rtype, named in block.items():
                if unquote(rtype) != "azurerm_role_assignment":
                    continue
                for name, body in named.items():
                    where = f"{module.rel(tf)}: azurerm_role_assignment.{unquote(name)}"
                    role = str(unquote(body.get("role_definition_name", "")))
                    roles = {r for r in AZURE_ADMIN_ROLES | AZURE_IDENTITY_ROLES if r in role}
                    if roles and "azurerm_user_assigned_identity.workloads" in str(body.get("principal_id", "")):
                        problems.append(f"{where} grants {sorted(roles)} to the workloads' identity")
                    if not roles & AZURE_ADMIN_ROLES:
                        continue
                    condition = resolved(str(unquote(body.get("condition", ""))))
                    assignable = set(GUID.findall(condition))
                    if "roleAssignments:RoleDefinitionId" not in condition or not assignable:
                        problems.append(f"{where} grants {role} without a condition naming the roles it may assign")
                    elif not assignable <= AZURE_ASSIGNABLE:
                        problems.append(f"{where} may assign roles beyond the namespaces' data roles: {sorted(assignable - AZURE_ASSIGNABLE)}")
                    if "ServicePrincipal" not in condition:
                        problems.append(f"{where} may assign to principals other than service principals")


def check_values(value, schema, where, rel):
    """Keys must exist in the schema; literal values must have its type and enum."""
    if isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties", True)
        if schema.get("type") not in (None, "object") and "object" not in schema.get("type", []):
            problems.append(f"{rel}: helm value {where} is an object, the chart wants {schema.get('type')}")
            return
        for k, v in value.items():
            if k.startswith("__"):
                continue
            key = unquote(k)
            if props is not None and key in props:
                check_values(v, props[key], f"{where}.{key}", rel)
            elif isinstance(extra, dict):
                check_values(v, extra, f"{where}.{key}", rel)
            elif extra is False or (props is not None and extra is not True and key not in props):
                problems.append(f"{rel}: helm value {where}.{key} is not in the chart's values schema")
        return
    if isinstance(value, str) and "${" in value:
        return  # computed at apply time; only its key is checked
    literal = unquote(value) if isinstance(value, str) else value
    if "enum" in schema and literal not in schema["enum"]:
        problems.append(f"{rel}: helm value {where}={literal!r} is not one of {schema['enum']}")
    want = schema.get("type")
    types = {"string": str, "boolean": bool, "integer": int, "object": dict, "array": list}
    if isinstance(want, str) and want in types and not isinstance(literal, types[want]):
        problems.append(f"{rel}: helm value {where}={literal!r} is not a {want}")
    if isinstance(literal, str) and "pattern" in schema and not re.search(schema["pattern"], literal):
        problems.append(f"{rel}: helm value {where}={literal!r} does not match {schema['pattern']}")


def main(terraform=None, quiet=False):
    global ROOT, problems
    problems.clear()
    terraform = terraform or TERRAFORM
    ROOT = terraform.parent
    clouds = sorted(p for p in terraform.iterdir() if p.is_dir())
    if not clouds:
        problems.append("terraform/: no modules found")
    for cloud in clouds:
        module = Module(cloud)
        module.check_declarations()
        module.check_references()
        check_workload_identity(module)
        check_azure_delegation(module)
        if "helm_values" not in module.locals:
            problems.append(f"{cloud.relative_to(ROOT)}: no local.helm_values passed to the chart")
        else:
            check_values(module.locals["helm_values"], SCHEMA, "", cloud.relative_to(ROOT))
        if not any(t == "helm_release" for t, _ in module.resources):
            problems.append(f"{cloud.relative_to(ROOT)}: the operator is not installed (no helm_release)")
        readme = cloud / "README.md"
        text = readme.read_text() if readme.is_file() else ""
        if not text:
            problems.append(f"{cloud.relative_to(ROOT)}: no README.md with the module's inputs and outputs")
        for kind, names in (("variable", module.variables), ("output", module.outputs)):
            for name in names:
                if text and f"| `{name}` |" not in text:
                    problems.append(f"{cloud.relative_to(ROOT)}/README.md: {kind} {name} has no row")
        examples = sorted(p for p in (cloud / "examples").glob("*") if p.is_dir())
        if not examples:
            problems.append(f"{cloud.relative_to(ROOT)}: no example roots in examples/")
            continue
        for example in examples:
            root = Module(example)
            root.check_declarations()
            root.check_references(child=module)
            root.check_module_call(module)
        if not quiet:
            print(f"{cloud.name}: {len(module.variables)} variables, {len(module.resources)} resources, "
                  f"{len(module.outputs)} outputs checked")
    if not quiet:
        for p in problems:
            print(p)
        print(f"terraform static checks: {len(problems)} problem(s)")
    return 1 if problems else 0


def self_test():
    """The checks find what they are meant to find: broken copies of terraform/ fail."""
    import shutil
    import tempfile

    cases = [
        ("gcp/main.tf", "project  = var.project_id", "project  = var.no_such_variable", "var.no_such_variable is not declared"),
        ("gcp/outputs.tf", 'output "get_credentials"', 'output "renamed"', "module.substratus.get_credentials is not an output"),
        ("aws/main.tf", 'cloud             = "aws"', 'cloud             = "mars"', "helm value .cloud='mars' is not one of"),
        ("azure/main.tf", "registryURL       =", "registryUrl       =", "helm value .registryUrl is not in the chart's values schema"),
        ("aws/examples/existing-cluster/main.tf", "create_cluster               = false", "create_clusters = false", "sets create_clusters, which terraform/aws does not declare"),
        ("gcp/variables.tf", 'description = "Region of the cluster', 'label = "Region of the cluster', "variable region has no description"),
        ("aws/README.md", "| `subnet_ids` |", "| subnet ids |", "README.md: variable subnet_ids has no row"),
        ("gcp/main.tf", 'member             = "serviceAccount:${google_service_account.operator.email}"\n}\n\n# The operator adds',
         'member             = "serviceAccount:${google_service_account.substratus.email}"\n}\n\n# The operator adds',
         "grants roles/iam.serviceAccountTokenCreator to google_service_account.substratus"),
        ("azure/main.tf", 'ForAnyOfAnyValues:GuidEquals {${local.repository_writer}}\n      AND',
         'ForAnyOfAnyValues:GuidEquals {${local.repository_writer}, 8e3af657-a8ff-443c-a75c-2fe8c4bcb635}\n      AND',
         "may assign roles beyond the namespaces' data roles: ['8e3af657-a8ff-443c-a75c-2fe8c4bcb635']"),
        ("azure/main.tf", '  role_definition_name = "AcrPush"\n  principal_id         = azurerm_user_assigned_identity.workloads[0].principal_id',
         '  role_definition_name = "Managed Identity Operator"\n  principal_id         = azurerm_user_assigned_identity.workloads[0].principal_id',
         "grants ['Managed Identity Operator'] to the workloads' identity"),
        ("azure/main.tf", 'role_definition_name = "Managed Identity Contributor"',
         'role_definition_name = "User Access Administrator"',
         "azurerm_role_assignment.federated_credentials grants User Access Administrator without a condition naming the roles"),
    ]
    failures = 0
    for rel, old, new, expected in cases:
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / "terraform"
            shutil.copytree(TERRAFORM, copy)
            f = copy / rel
            text = f.read_text()
            assert old in text, f"self-test: {old!r} not in {rel}"
            f.write_text(text.replace(old, new, 1))
            main(copy, quiet=True)
            if not any(expected in p for p in problems):
                print(f"self-test FAILED: breaking {rel} did not report {expected!r}; got {problems}")
                failures += 1
    problems.clear()
    print(f"terraform checker self-test: {len(cases) - failures} of {len(cases)} broken copies caught")
    return failures


if __name__ == "__main__":
    if "--self-test" in sys.argv:
        sys.exit(1 if self_test() else 0)
    sys.exit(main())
