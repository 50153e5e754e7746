//! What references in an alarm resolve to: the names CloudWatch sees in a deployment of
//! these templates, with placeholder ARNs in the local region and account
//! (`riffle_plan::template::LOCAL_*`), since no stack exists to ask.
//!
//! `riffle_plan::template::Template::eval` resolves `Ref` and `Fn::GetAtt` of a resource
//! through the [`Scope`] it is given; this module builds that scope the way CloudFormation
//! answers: `Ref` of a stream, table, bucket or function is its name, of a queue its URL
//! and of a topic its ARN; `Fn::GetAtt` gives `Arn`, and a queue's `QueueName`/`QueueUrl`,
//! a topic's `TopicName`/`TopicArn`. `Fn::ImportValue` reads the platform stack's exports,
//! evaluated with the same names.

use std::collections::BTreeMap;

use riffle_plan::template::{
    Attrs, LOCAL_ACCOUNT_ID, LOCAL_PARTITION, LOCAL_REGION, Scope, Template,
};
use riffle_plan::{Plan, ServiceSpec};

use crate::error::AlarmsError;

/// The platform template's resources, by logical id.
pub(crate) fn platform(plan: &Plan) -> Result<BTreeMap<String, Attrs>, AlarmsError> {
    let mut names = BTreeMap::new();
    let arn = |service: &str, resource: String| {
        format!("arn:{LOCAL_PARTITION}:{service}:{LOCAL_REGION}:{LOCAL_ACCOUNT_ID}:{resource}")
    };
    for s in &plan.streams {
        let stream_arn = arn("kinesis", format!("stream/{}", s.name));
        names.insert(s.logical.clone(), attrs(&s.name, [("Arn", stream_arn)]));
    }
    for t in &plan.tables {
        let table_arn = arn("dynamodb", format!("table/{}", t.name));
        names.insert(t.logical.clone(), attrs(&t.name, [("Arn", table_arn)]));
    }
    for b in &plan.buckets {
        let bucket_arn = format!("arn:{LOCAL_PARTITION}:s3:::{}", b.name);
        names.insert(b.logical.clone(), attrs(&b.name, [("Arn", bucket_arn)]));
    }
    for q in &plan.queues {
        let url = format!(
            "https://sqs.{LOCAL_REGION}.amazonaws.com/{LOCAL_ACCOUNT_ID}/{}",
            q.name
        );
        let a = [
            ("Arn", arn("sqs", q.name.clone())),
            ("QueueName", q.name.clone()),
            ("QueueUrl", url.clone()),
        ];
        names.insert(q.logical.clone(), attrs(&url, a));
    }
    let (no_resources, no_exports) = (BTreeMap::new(), BTreeMap::new());
    let scope = Scope {
        resources: &no_resources,
        exports: &no_exports,
    };
    for (logical, topic) in plan.platform.resources_of("AWS::SNS::Topic") {
        // A topic without TopicName gets a generated one: nothing to name it by here.
        let Some(name) = plan
            .platform
            .prop(logical, &topic.properties, "TopicName", scope)?
        else {
            continue;
        };
        let topic_arn = arn("sns", name.clone());
        let a = [("TopicArn", topic_arn.clone()), ("TopicName", name)];
        names.insert(logical.to_owned(), attrs(&topic_arn, a));
    }
    Ok(names)
}

/// A service template's function, by logical id (`Ref: Function` is its name).
pub(crate) fn service(service: &ServiceSpec) -> BTreeMap<String, Attrs> {
    let function_arn = format!(
        "arn:{LOCAL_PARTITION}:lambda:{LOCAL_REGION}:{LOCAL_ACCOUNT_ID}:function:{}",
        service.function_name
    );
    service
        .template
        .resources_of("AWS::Lambda::Function")
        .map(|(logical, _)| {
            let a = attrs(&service.function_name, [("Arn", function_arn.clone())]);
            (logical.to_owned(), a)
        })
        .collect()
}

/// The platform's exports. One whose value does not resolve (an attribute of a resource
/// not named above, such as the key's ARN) is left out: importing it is then the error.
pub(crate) fn exports(
    platform: &Template,
    names: &BTreeMap<String, Attrs>,
) -> BTreeMap<String, String> {
    let no_exports = BTreeMap::new();
    let scope = Scope {
        resources: names,
        exports: &no_exports,
    };
    platform
        .outputs()
        .filter_map(|(_, output)| {
            let name = platform.eval(output.export_name.as_ref()?, scope).ok()?;
            Some((name, platform.eval(&output.value, scope).ok()?))
        })
        .collect()
}

fn attrs<const N: usize>(reference: &str, attrs: [(&str, String); N]) -> Attrs {
    Attrs {
        reference: reference.to_owned(),
        attrs: attrs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
    }
}
