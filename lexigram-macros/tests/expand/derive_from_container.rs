impl ::lexigram::module::FromContainer for Auditor {
    fn from_container(
        container: &::lexigram::module::Container,
    ) -> ::core::result::Result<Self, ::lexigram::module::Missing> {
        ::core::result::Result::Ok(Self {
            journal: ::lexigram::__private::field::<Dep<Journal>>(container)?,
            accounts: ::lexigram::__private::field::<Repository<Account>>(container)?,
        })
    }
}
