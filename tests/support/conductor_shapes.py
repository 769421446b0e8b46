"""The Conductor spec's example documents and the shape comparison the Conductor tests (unit and daemon) share."""

from __future__ import annotations

from lxml import etree

# The spec's examples, plus the elements the real Conductor also sent and aeolus-cli reads (issue 12):
# <environment> on images, <target> on a new image's target images, <provider> and <account> on started pushes.
SPEC_IMAGE = """<image href='https://localhost/conductor/api/images/aad95492' id='aad95492'>
  <name>tmpl1</name><environment>default</environment><description>foo</description><os>Fedora</os><os_version>14</os_version><arch>x86_64</arch>
  <builds type='xs:list'><build href='https://localhost/conductor/api/builds/5ee69b07' id='5ee69b07'></build></builds>
</image>"""
SPEC_BUILD = """<build href='https://localhost/conductor/api/builds/5ee69b07' id='5ee69b07'>
  <image href='https://localhost/conductor/api/images/aad95492' type='xs:string'>aad95492</image></build>"""
SPEC_TARGET_IMAGE = """<target_image href='https://localhost/conductor/api/target_images/8248e4f4' id='8248e4f4'>
  <object_type>target_image</object_type><template>78ac256c</template>
  <build href='https://localhost/conductor/api/builds/5ee69b07' id='5ee69b07'></build>
  <status>COMPLETED</status><provider_images></provider_images></target_image>"""
SPEC_PROVIDER_IMAGE = """<provider_image href='https://localhost/conductor/api/provider_images/669bcd8d' id='669bcd8d'>
  <object_type>provider_image</object_type><target_identifier>ami</target_identifier><status>COMPLETED</status>
  <provider>ec2-us-east-1</provider>
  <target_image href='https://localhost/conductor/api/target_images/3db70983' id='3db70983'></target_image>
</provider_image>"""
SPEC_STARTED_IMAGE = """<image href='https://localhost/conductor/api/images/fd1f7cbd' id='fd1f7cbd'>
  <build href='https://localhost/conductor/api/builds/81cb0332' id='81cb0332'><target_images>
    <target_image href='https://localhost/conductor/api/target_images/a6cf95c7' id='a6cf95c7'>
      <status>New</status><target>ec2</target><provider_images></provider_images></target_image>
  </target_images></build></image>"""
SPEC_STARTED_PUSHES = """<provider_images>
  <provider_image href='https://localhost/conductor/api/provider_images/019e7f0d' id='019e7f0d'><status>New</status>
    <provider>ec2-us-east-1</provider><account>ec2-acc</account></provider_image>
</provider_images>"""


def shape(element: etree._Element) -> tuple:
    """Tag, attribute names (and the values that are not ids or URLs), children's shapes."""
    fixed = {name: value for name, value in element.attrib.items() if name == "type"}
    return (
        element.tag,
        tuple(sorted(element.attrib)),
        tuple(sorted(fixed.items())),
        tuple(shape(child) for child in element),
    )


def spec_shape(text: str) -> tuple:
    """The shape of a spec example written over several lines."""
    return shape(etree.fromstring(text.replace("\n", "")))
